#!/usr/bin/env bash
# Install what the tests need (when missing) and run the whole suite.
#
#   scripts/test.sh            everything
#   scripts/test.sh probe_     only tests whose name matches (passed to the test runner)
#
# Needs: cargo; nginx, libnginx-mod-stream, php-fpm, iproute2, strace, uwsgi-core with
# uwsgi-plugin-python3 and openssl from Debian (installed with apt-get when run as root);
# python3 for a private venv with gunicorn, grpcio and ansible-core under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

need_apt=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
[[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]] || need_apt+=(libnginx-mod-stream)
compgen -G '/usr/sbin/php-fpm*' >/dev/null || need_apt+=(php-fpm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# `ip link set lo up` in the private network namespaces of the resolver and ipv6only tests.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# The output tests count write(2) calls with strace.
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
command -v uwsgi >/dev/null 2>&1 || need_apt+=(uwsgi-core)
[[ -f /usr/lib/uwsgi/plugins/python3_plugin.so ]] || need_apt+=(uwsgi-plugin-python3)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    say "installing ${need_apt[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's nginx would start a system nginx on port 80; the tests never need it.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.safe-reload
    had_policy=0; [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
    [[ $had_policy == 1 ]] || install -m 0755 /usr/sbin/policy-rc.d.safe-reload /usr/sbin/policy-rc.d
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
    [[ $had_policy == 1 ]] || rm -f /usr/sbin/policy-rc.d
    rm -f /usr/sbin/policy-rc.d.safe-reload
  else
    say "missing: ${need_apt[*]}. Run as root to install them, or: sudo apt-get install ${need_apt[*]}"
    exit 2
  fi
fi

# A private Python venv for real application servers (gunicorn, a grpcio server) and the
# Ansible rollout test.
venv=target/test-venv
if [[ ! -x $venv/bin/gunicorn || ! -x $venv/bin/ansible-playbook ]] \
  || ! "$venv/bin/python" -c 'import grpc' 2>/dev/null; then
  say "creating $venv with gunicorn, grpcio and ansible-core"
  mkdir -p target
  [[ -x $venv/bin/pip ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check gunicorn grpcio ansible-core
fi
export SAFE_RELOAD_TEST_VENV="$PWD/$venv"

say "building"
cargo build --all-targets --quiet

say "running the test suite"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast --test-threads "${SAFE_RELOAD_TEST_THREADS:-4}" "$@"
else
  cargo test --no-fail-fast -- --test-threads "${SAFE_RELOAD_TEST_THREADS:-4}" "$@"
fi
