#!/usr/bin/env bash
# The main job in under a minute, on loopback, with a throwaway nginx:
#   1. a good change goes live and is proven live;
#   2. a change pointing at the wrong port is refused before reload, with a hint naming the
#      port the app really listens on;
#   3. a change to a backend that accepts connections and closes them unanswered is refused
#      before reload too: the protocol probe sees what a connect probe cannot;
#   4. a change that passes every probe but makes nginx answer 502 is rolled back;
#   5. history shows all of it.
# Everything it starts is stopped and everything it writes is removed, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bold=$(tput bold 2>/dev/null || true); plain=$(tput sgr0 2>/dev/null || true)
[[ -t 1 && -z ${NO_COLOR:-} ]] || { bold=; plain=; }
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '%s$ %s%s\n' "$bold" "$*" "$plain"; "$@"; }

if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    say "installing nginx (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq nginx >/dev/null
  else
    echo "nginx is not installed; run as root to install it, or: sudo apt-get install nginx" >&2
    exit 2
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ -n ${SAFE_RELOAD_BIN:-} ]]; then
  SR=$SAFE_RELOAD_BIN
else
  say "building safe-reload"
  cargo build --quiet
  SR="$PWD/target/debug/safe-reload"
fi

demo=$(mktemp -d /tmp/safe-reload-demo.XXXXXX)
pids=()
# Everything this demo started, by pid: the backends, the nginx master and its workers.
started() {
  printf '%s\n' "${pids[@]}"
  local master
  master=$(cat "$demo/nginx/logs/nginx.pid" 2>/dev/null || true)
  if [[ -n $master ]]; then echo "$master"; pgrep -P "$master" || true; fi
}
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  set +e
  local all
  mapfile -t all < <(started)
  [[ -s $demo/nginx/logs/nginx.pid ]] && kill -QUIT "$(cat "$demo/nginx/logs/nginx.pid")" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  # Wait (bounded) for everything to go before removing its files; then force what is left.
  for _ in $(seq 50); do
    alive=0
    for pid in "${all[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${all[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  rm -rf "$demo"
  exit "$code"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT TERM

# A loopback address of its own (127.1-100.x.y), so nothing else on the machine listens there.
IP=127.$((RANDOM % 100 + 1)).$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))
free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$IP"; }
APP=$(free_port); BROKEN=$(free_port); CRASHING=$(free_port); WEB=$(free_port); WRONG=$(free_port)
mkdir -p "$demo/nginx/logs" "$demo/nginx/conf.d" "$demo/state"

# The application: a real HTTP server on $IP:$APP, as gunicorn or node would be.
cat > "$demo/app.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the app\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
PY
# A broken backend: it accepts connections (so a connect probe passes) and closes them
# without a word, which nginx turns into 502 Bad Gateway.
cat > "$demo/broken.py" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
while True:
    c, _ = s.accept(); c.close()
PY
# An app that answers the server-wide OPTIONS * (so the protocol probe passes) and crashes on
# every page: only a request through nginx after the reload shows the 502.
cat > "$demo/crashing.py" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
while True:
    c, _ = s.accept()
    if c.recv(4096).startswith(b"OPTIONS * "):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    c.close()
PY
(cd "$demo" && exec python3 app.py "$IP" "$APP" >/dev/null 2>&1) &
pids+=($!)
cat > "$demo/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $demo/nginx/logs/nginx.pid;
error_log $demo/nginx/logs/error.log notice;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $demo/nginx/client_temp;
    proxy_temp_path $demo/nginx/proxy_temp;
    fastcgi_temp_path $demo/nginx/fastcgi_temp;
    uwsgi_temp_path $demo/nginx/uwsgi_temp;
    scgi_temp_path $demo/nginx/scgi_temp;
    include conf.d/*.conf;
}
EOF
site="$demo/nginx/conf.d/site.conf"
write_site() {
  cat > "$site" <<EOF
server {
    listen $IP:$WEB;
    server_name demo.test;
    location / {
        proxy_pass http://$IP:$1;
    }
}
EOF
}
write_site "$APP"

# Wait (bounded) until a backend listens.
wait_listen() {
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('$IP',$1),0.2).close()" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "the backend on $IP:$1 did not start" >&2; return 1
}
wait_listen "$APP"

export SAFE_RELOAD_NGINX="$NGINX" SAFE_RELOAD_STATE_DIR="$demo/state"
sr() { run "$SR" -c "$demo/nginx/nginx.conf" -p "$demo/nginx" "$@"; }

say "a throwaway nginx on $IP:$WEB in front of an app on $IP:$APP, under $demo"
"$NGINX" -p "$demo/nginx" -c "$demo/nginx/nginx.conf"
sr init
run curl -s "http://$IP:$WEB/"

say "1. a good change: add a header; safe-reload tests, probes, shows the diff, reloads, proves it, verifies"
sed -i "s|proxy_pass|add_header X-Demo v2;\n        proxy_pass|" "$site"
sr -y
run curl -s -D - -o /dev/null "http://$IP:$WEB/" | grep -i x-demo

say "2. the article's mistake: the app listens on $APP but the config says $WRONG"
write_site "$WRONG"
sed -i "s|proxy_pass|add_header X-Demo v2;\n        proxy_pass|" "$site"
set +e; sr -y; code=$?; set -e
echo "exit status $code: refused before reload; nginx still serves the good config:"
run curl -s "http://$IP:$WEB/"

say "3. a backend that accepts connections and answers nothing: nginx would say 502"
(cd "$demo" && exec python3 broken.py "$IP" "$BROKEN" >/dev/null 2>&1) &
pids+=($!)
wait_listen "$BROKEN"
write_site "$BROKEN"
set +e; sr -y; code=$?; set -e
echo "exit status $code: refused before reload; no client saw a 502:"
run curl -s "http://$IP:$WEB/"

say "4. an app that answers the probe but crashes on every page: nginx says 502"
(cd "$demo" && exec python3 crashing.py "$IP" "$CRASHING" >/dev/null 2>&1) &
pids+=($!)
wait_listen "$CRASHING"
write_site "$CRASHING"
set +e; sr -y; code=$?; set -e
echo "exit status $code: a throwaway shadow nginx on loopback ports answered 502; refused before the reload, no client saw it"

say "4b. the same change without the shadow (--no-shadow): reloaded, 502 seen through nginx, rolled back"
set +e; sr -y --no-shadow; code=$?; set -e
echo "exit status $code: rolled back; the site answers again:"
run curl -s "http://$IP:$WEB/"
run cat "$site"

say "5. what happened, from the state directory"
sr history

say "done: every process and file of this demo is being removed"
