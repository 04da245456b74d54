#!/usr/bin/env bash
# The main job in under a minute, on loopback, with a throwaway nginx:
#   1. a good change goes live and is proven live;
#   2. a change pointing at the wrong port is refused before reload, with a hint naming the
#      port the app really listens on;
#   3. a change that passes every probe but makes nginx answer 502 is rolled back;
#   4. history shows all of it.
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

say "building safe-reload"
cargo build --quiet
SR="$PWD/target/debug/safe-reload"

demo=$(mktemp -d /tmp/safe-reload-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  if [[ -s $demo/nginx/logs/nginx.pid ]]; then
    kill -QUIT "$(cat "$demo/nginx/logs/nginx.pid")" 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Wait (bounded) for everything to go before removing its files.
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    pgrep -f "$demo/nginx" >/dev/null && alive=1
    ((alive)) || break
    sleep 0.1
  done
  pkill -KILL -f "$demo/nginx" 2>/dev/null || true
  rm -rf "$demo"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP=$(free_port); BROKEN=$(free_port); WEB=$(free_port); WRONG=$(free_port)

# The application: a real HTTP server on 127.0.0.1:$APP, as gunicorn or node would be.
python3 - "$APP" >/dev/null 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the app\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)
# A broken backend: it accepts connections (so probes pass) and closes them without a word,
# which nginx turns into 502 Bad Gateway.
python3 - "$BROKEN" >/dev/null 2>&1 <<'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
while True:
    c, _ = s.accept(); c.close()
PY
pids+=($!)

mkdir -p "$demo/nginx/logs" "$demo/nginx/conf.d" "$demo/state"
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
    listen 127.0.0.1:$WEB;
    server_name demo.test;
    location / {
        proxy_pass http://127.0.0.1:$1;
    }
}
EOF
}
write_site "$APP"

# Wait (bounded) until both backends listen.
for _ in $(seq 100); do
  python3 -c "import socket,sys; [socket.create_connection(('127.0.0.1',p),0.2).close() for p in ($APP,$BROKEN)]" 2>/dev/null && break
  sleep 0.05
done

export SAFE_RELOAD_NGINX="$NGINX" SAFE_RELOAD_STATE_DIR="$demo/state"
sr() { run "$SR" -c "$demo/nginx/nginx.conf" -p "$demo/nginx" "$@"; }

say "a throwaway nginx on 127.0.0.1:$WEB in front of an app on 127.0.0.1:$APP"
"$NGINX" -p "$demo/nginx" -c "$demo/nginx/nginx.conf"
sr init
run curl -s "http://127.0.0.1:$WEB/"

say "1. a good change: add a header; safe-reload tests, probes, shows the diff, reloads, proves it, verifies"
sed -i "s|proxy_pass|add_header X-Demo v2;\n        proxy_pass|" "$site"
sr -y
run curl -s -D - -o /dev/null "http://127.0.0.1:$WEB/" | grep -i x-demo

say "2. the article's mistake: the app listens on $APP but the config says $WRONG"
write_site "$WRONG"
sed -i "s|proxy_pass|add_header X-Demo v2;\n        proxy_pass|" "$site"
set +e; sr -y; code=$?; set -e
echo "exit status $code: refused before reload; nginx still serves the good config:"
run curl -s "http://127.0.0.1:$WEB/"

say "3. a backend that passes the probe but answers nothing: nginx would say 502"
write_site "$BROKEN"
set +e; sr -y; code=$?; set -e
echo "exit status $code: rolled back; the site answers again:"
run curl -s "http://127.0.0.1:$WEB/"
run cat "$site"

say "4. what happened, from the state directory"
sr history

say "done: every process and file of this demo is being removed"
