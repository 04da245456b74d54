//! Every `server {}` of `http` and `stream`: its `listen` addresses, `server_name`s and proxied
//! `location`s, with file and line. Used for the port-in-use preflight and for health requests.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::conf::example;
use crate::conf::host_map::{self, HostMap, Source};
use crate::conf::pick::{self, Picked};
use crate::conf::targets::addr::{self, Parsed};
use crate::conf::targets::pass::PASS_DIRECTIVES;
use crate::conf::targets::Context;
use crate::conf::tree::{Directive, Word};
use crate::conf::variants::{self, Variant};
use crate::conf::{rewrites, uri_map, Config};

/// The configuration's Host maps, by variable.
type HostMaps = std::collections::HashMap<String, Arc<HostMap>>;

/// What a `listen` binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenAddr {
    /// `listen 80`, `listen *:80` (as `0.0.0.0:80`), `listen 127.0.0.1:80`, `listen [::]:80`.
    Tcp(SocketAddr),
    /// `listen localhost:80`: a name nginx resolves at startup.
    Host { name: String, port: u16 },
    /// `listen unix:/run/nginx.sock`.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(sa) => write!(f, "{sa}"),
            ListenAddr::Host { name, port } => write!(f, "{name}:{port}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One `listen` directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listen {
    pub addr: ListenAddr,
    pub ssl: bool,
    /// `listen ... udp` (stream only).
    pub udp: bool,
    /// An IPv6 listen that takes IPv6 connections only: nginx sets `IPV6_V6ONLY` unless
    /// `ipv6only=off` (`ngx_http_core_listen` and `ngx_stream_core_listen` default it to on),
    /// so `[::]:80` leaves the IPv4 port to others.
    #[serde(skip)]
    pub ipv6only: bool,
    pub default_server: bool,
    /// `listen ... proxy_protocol`: nginx expects a PROXY protocol header first.
    pub proxy_protocol: bool,
    /// `listen ... http2`.
    pub http2: bool,
    /// nginx binds a socket of its own for it (`bind`, or a parameter that implies it:
    /// `backlog=`, `rcvbuf=`, `sndbuf=`, `accept_filter=`, `deferred`, `ipv6only=`,
    /// `reuseport`, `so_keepalive=`, `setfib=`, `fastopen=`), even where a wildcard of its port
    /// could serve it.
    #[serde(skip)]
    pub bind: bool,
    pub file: Arc<Path>,
    pub line: u32,
}

/// How a request reaches a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// This path is answered by the location.
    Path(String),
    /// No path is known to reach it; the reason is said to the operator.
    Unknown(String),
    /// An `internal` location other locations' requests reach (their `auth_request` asks it,
    /// their `rewrite` sends requests to it): their checks verify it; a request of its own
    /// would get nginx's 404.
    Subrequest,
}

/// A `location` whose requests go to a backend: it holds a `*_pass`, or its `auth_request`
/// subrequest goes to a location that does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// `=`, `^~`, `~`, `~*`, or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modifier: Option<String>,
    pub path: String,
    /// The `*_pass` directive that sends requests on, e.g. `proxy_pass`; `auth_request` for a
    /// location with none, whose requests reach a backend only through that subrequest.
    pub pass: &'static str,
    /// Its first argument: `http://api`, `unix:/run/app.sock` (for `auth_request`, what the
    /// subrequest's location passes to).
    pub target: String,
    /// The URI its `auth_request` (its own or the server's) asks before each request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_request: Option<String>,
    /// A request path that reaches this location.
    pub reach: Reach,
    /// `auth_basic`, `auth_request` or `deny` apply here (or in the server): nginx itself
    /// may answer 401/403.
    pub auth: bool,
    /// Codes of `return` in the location (and its `if` blocks).
    pub returns: Box<[u16]>,
    /// Where `ssl_verify_client on` asks every client of its server for a certificate: over
    /// TLS, a check (which has none) gets nginx's 400 here.
    pub client_certificate: Option<(Arc<Path>, u32)>,
    /// The `*_read_timeout` written for its `*_pass` (here or inherited): nginx answers 504
    /// itself once a backend is silent that long. `None`: nginx's default (60 s).
    pub read_timeout: Option<Duration>,
    /// It passes the client's `Upgrade` on (`proxy_set_header Upgrade $http_upgrade;`, its
    /// own or inherited): a location whose clients may open WebSockets there.
    #[serde(skip)]
    pub websocket: bool,
    /// It passes `Upgrade` on and says it is a WebSocket endpoint, itself or by its path (see
    /// [`websocket_endpoint`]): checked with a WebSocket handshake even where last-good's
    /// location of its key passed no `Upgrade`.
    #[serde(skip)]
    pub websocket_endpoint: bool,
    /// An `error_page` (its own or inherited) that sends a failure of its backend elsewhere,
    /// when that failure leaves no trace nginx logs (`proxy_intercept_errors on`, so the
    /// backend's own 502 is replaced): why an answer does not say the backend answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_failure: Option<String>,
    /// The `map $host` (or `$http_host`) its `*_pass` goes through: another Host may reach
    /// another upstream here.
    #[serde(skip)]
    pub host_map: Option<Arc<HostMap>>,
    /// The values of the `map $uri` (or `$request_uri`) its `*_pass` goes through that
    /// another path than its own gets: another upstream for each.
    #[serde(skip)]
    pub uri_branches: Box<[uri_map::Branch]>,
    /// Requests reach a backend through a `rewrite` (see [`Rewritten`]); everything else
    /// (`pass`, `target`, gates) is the location they are rewritten to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<Rewritten>,
    /// Requests of another kind than the plain GET that get another backend here (a `map`
    /// or `if` on the method, a cookie, a header, a query parameter; a `limit_except`).
    #[serde(skip)]
    pub variants: Box<[Variant]>,
    /// Its backend is passed to only inside an `if` (`if ($prerender = 1) { proxy_pass ...;
    /// }`): what a check carries to meet the condition, or why none is known to.
    #[serde(skip)]
    pub only_when: Option<Variant>,
    /// What its checks send to keep out of an `if` of its own that answers for nginx (`if
    /// ($http_x_api_key != "k") { return 401; }`), as its clients do; see the server's.
    #[serde(skip)]
    pub check_headers: Vec<(String, String)>,
    /// A `limit_req` or `limit_conn` is in force, and nothing here reads the client's address
    /// otherwise (no `allow`/`deny`, no routing by it): each check's request comes from a
    /// loopback address of its own, so the run's own requests do not use up a limit keyed
    /// on `$binary_remote_addr` and get nginx's 503 where clients get the backend.
    #[serde(skip)]
    pub spread_sources: bool,
    pub file: Arc<Path>,
    pub line: u32,
}

/// How a location with no backend of its own, or a server-level `rewrite`, sends requests to
/// one. The [`Location`] keeps the rewriting location's `modifier`, `path`, `file` and `line`;
/// for a server-level rewrite: no modifier, the path derived from its regex, the directive's
/// place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewritten {
    /// A server-level `rewrite`, not a location's.
    pub server: bool,
    /// As shown: `rewritten to /v1/x (location /v1/, site.conf:3)`, after `rewrite
    /// ^/shop/(.*)$ (site.conf:2)` for a server-level one.
    pub what: String,
    /// The `if` on the request whose `rewrite` this is (`if ($arg_v = 2) { rewrite ^
    /// /v2$uri last; }`): what a check carries to meet it, or why none does.
    #[serde(skip)]
    pub when: Option<Variant>,
}

/// One `server {}` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub context: Context,
    pub file: Arc<Path>,
    pub line: u32,
    /// The listens written, or nginx's default (`*:80`) when there is none (http only).
    pub listens: Vec<Listen>,
    pub server_names: Vec<String>,
    /// Proxied locations (http); empty for stream servers.
    pub locations: Vec<Location>,
    /// Locations that answer from files alone (`try_files $uri $uri/ =404;`): no backend is
    /// behind them, so no check verifies them.
    #[serde(skip)]
    pub unbacked: Vec<Unbacked>,
    /// The modifier and path of each requested location (nested ones too) that passes
    /// nowhere and answers nothing itself, `try_files` or not (`location / { root ...;
    /// index index.html; }`): nginx serves files there.
    #[serde(skip)]
    pub static_files: Vec<(Option<String>, String)>,
    /// A server-level `if ($scheme = http) { return 301 https://...; }` (or `!= https`):
    /// nginx answers every plain-HTTP request itself, so checks go over its TLS listens.
    #[serde(skip)]
    pub redirects_plain: bool,
    /// A server with no proxied location that answers every request itself with a `return`
    /// (its own, or `location / { return ...; }`): the redirect of port 80 to https, a
    /// catch-all's `return 444`. Checked as a location (pass `return`, its text as the
    /// target) so a change that stops it answering (an `http2` copied onto its plain port)
    /// shows; what it answers is nginx's own, never a pass. `None` when it has a proxied
    /// location, or rejects TLS handshakes (`ssl_reject_handshake on`: no check gets an
    /// answer there, before or after).
    #[serde(skip)]
    pub answers: Option<Location>,
    /// For a server that redirects plain HTTP itself (see `redirects_plain`): that `if`'s
    /// `return`, checked on its plain listens as [`Server::answers`] is (an `http2` copied
    /// onto one leaves its clients without the redirect).
    #[serde(skip)]
    pub plain_answer: Option<Location>,
    /// Headers a request must carry not to get a server-level `return`: `if
    /// ($http_x_forwarded_proto != "https") { return 301 ...; }` behind a load balancer, an
    /// API key `if ($http_x_api_key != "k") { return 403; }`. Every check carries them, as
    /// the clients nginx serves do.
    #[serde(skip)]
    pub check_headers: Vec<(String, String)>,
}

/// A location no backend answers: `try_files` serves a file or ends in a status of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbacked {
    /// `location /`, `location = /robots.txt`.
    pub what: String,
    /// `=`, `^~`, `~`, `~*`, or none, and its path, as for [`Location`].
    pub modifier: Option<String>,
    pub path: String,
    /// Its `try_files`, as written: `try_files $uri $uri/ =404`.
    pub try_files: String,
    pub file: Arc<Path>,
    pub line: u32,
}

/// Every `server {}` of the configuration, in file order.
pub fn extract(config: &Config) -> Vec<Server> {
    let maps = host_map::index(config);
    let mut out = Vec::new();
    for top in &config.tree {
        let Some(context) = Context::of_block(&top.name) else {
            continue;
        };
        let verify_client = asks_client_certificate(top.children()).unwrap_or(None);
        let by_client = variants::by_client(top.children());
        let shared = Shared {
            maps: &maps,
            by_client: &by_client,
            verify_client,
            limits: Limits::default().within(top.children()),
            read_timeouts: ReadTimeouts::default().within(top.children()),
            rejects_handshake: (top.children().iter().rev())
                .find(|c| c.name == "ssl_reject_handshake")
                .is_some_and(|c| c.arg0().eq_ignore_ascii_case("on")),
            proxy_headers: inherit_headers(&[], top.children()),
        };
        for d in top.children() {
            if d.name == "server" && d.block.is_some() {
                out.push(server(context, d, &shared, &config.conf_prefix));
            }
        }
    }
    share_socket_flags(&mut out);
    out
}

/// How nginx speaks on each address of a context: `ssl`, `http2` and `proxy_protocol` are
/// the address's, set by any server's `listen` of it (`ngx_http_add_addresses` ORs them over
/// the servers of one address). Each listen carries its address's, as written and as the
/// other servers there made it.
pub fn socket_flags(servers: &[Server]) -> HashMap<(Context, String), SocketFlags> {
    let mut flags: HashMap<(Context, String), SocketFlags> = HashMap::new();
    for s in servers {
        for l in s.listens.iter().filter(|l| !l.udp) {
            let f = flags.entry((s.context, l.addr.to_string())).or_default();
            f.ssl |= l.ssl;
            f.http2 |= l.http2;
            f.proxy_protocol |= l.proxy_protocol;
        }
    }
    flags
}

impl Listen {
    /// Its `ssl`, `http2` and `proxy_protocol` (after extraction, its address's).
    pub fn flags(&self) -> SocketFlags {
        SocketFlags {
            ssl: self.ssl,
            http2: self.http2,
            proxy_protocol: self.proxy_protocol,
        }
    }
}

/// An address's protocol flags (see [`socket_flags`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketFlags {
    pub ssl: bool,
    pub http2: bool,
    pub proxy_protocol: bool,
}

fn share_socket_flags(servers: &mut [Server]) {
    let flags = socket_flags(servers);
    for s in servers.iter_mut() {
        for l in s.listens.iter_mut().filter(|l| !l.udp) {
            if let Some(f) = flags.get(&(s.context, l.addr.to_string())) {
                (l.ssl, l.http2, l.proxy_protocol) = (f.ssl, f.http2, f.proxy_protocol);
            }
        }
    }
}

/// Whether the block innermost in `levels` (outermost first: `http`, `server`, `location`)
/// has `proxy_set_header Upgrade $http_upgrade;` in force (see [`inherit_headers`]).
pub(crate) fn upgrade_in_force(levels: &[&[Directive]]) -> bool {
    let headers = (levels.iter()).fold(Vec::new(), |outer, dirs| inherit_headers(&outer, dirs));
    passes_upgrade(&headers)
}

/// `proxy_set_header Upgrade $http_upgrade;` in force in a location (its own, or inherited
/// where it has none): it passes WebSocket handshakes.
fn passes_upgrade(headers: &[&Directive]) -> bool {
    headers.iter().any(|d| {
        d.name == "proxy_set_header"
            && d.args.len() >= 2
            && d.args[0].eq_ignore_ascii_case("upgrade")
            && d.args[1].to_ascii_lowercase().contains("$http_upgrade")
    })
}

/// Whether a location that passes `Upgrade` on is one its clients open WebSockets to: it
/// writes the header itself, or its path says so (`/ws/`, `/socket.io/`, `/cable`, Phoenix
/// LiveView's `/live`). The
/// header written once at the `server` or `http` level for the one WebSocket path reaches
/// every location; an app's `/` answers a handshake with its own 400, which its browsers
/// never send it.
fn websocket_endpoint(own: &[Directive], path: &str) -> bool {
    passes_upgrade(&own.iter().collect::<Vec<_>>()) || socket_path(path)
}

/// Whether a location's path names a WebSocket endpoint by a word of its own (`/ws/`,
/// `/socket.io/`, `/cable`, `/live`): one that is not (`/`, `/app/`) may serve pages beside
/// its sockets.
pub fn socket_path(path: &str) -> bool {
    let word = |w: &str| {
        matches!(
            w,
            "ws" | "wss"
                | "hub"
                | "hubs"
                | "cable"
                | "sockjs"
                | "signalr"
                | "live"
                | "stream"
                | "streams"
                | "subscriptions"
        ) || w.contains("socket")
            || w.contains("realtime")
    };
    (path.to_ascii_lowercase())
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(word)
}

/// `ssl_verify_client` in `dirs`: `on` asks every client for a certificate (the directive's
/// file and line); `optional`,
/// `optional_no_ca` and `off` let a client without one through. `None` when not set there.
fn asks_client_certificate(dirs: &[Directive]) -> Option<Option<(Arc<Path>, u32)>> {
    (dirs.iter().rev())
        .find(|d| d.name == "ssl_verify_client")
        .map(|d| (d.arg0().eq_ignore_ascii_case("on")).then(|| (d.file.clone(), d.line)))
}

/// Whether a block denies every client (`deny all;` and no `allow`).
fn denies(block: &Directive) -> bool {
    let body = block.children();
    (body.iter()).any(|c| c.name == "deny" && c.arg0().eq_ignore_ascii_case("all"))
        && !body.iter().any(|c| c.name == "allow")
}

/// What every server of a block (`http`, `stream`) reads from the block.
struct Shared<'a> {
    maps: &'a HostMaps,
    by_client: &'a [variants::ByClient],
    /// `ssl_verify_client on` at the block's level: where it is written.
    verify_client: Option<(Arc<Path>, u32)>,
    /// The block's `limit_req`/`limit_conn`.
    limits: Limits,
    /// The block's `*_read_timeout`s.
    read_timeouts: ReadTimeouts,
    /// `ssl_reject_handshake on` at the block's level.
    rejects_handshake: bool,
    /// The block's `proxy_set_header` lines (see [`Gates::proxy_headers`]).
    proxy_headers: Vec<&'a Directive>,
}

/// The `proxy_read_timeout`, `fastcgi_read_timeout`, `uwsgi_read_timeout`,
/// `scgi_read_timeout` and `grpc_read_timeout` written for a block or inherited (nginx's
/// default, 60 s, where none is): how long nginx waits for a backend's answer before its own
/// 504, by the module's prefix.
#[derive(Debug, Clone, Copy, Default)]
struct ReadTimeouts([Option<Duration>; 5]);

const READ_TIMEOUT_MODULES: [&str; 5] = ["proxy", "fastcgi", "uwsgi", "scgi", "grpc"];

impl ReadTimeouts {
    /// What a block inside `self` has in force: its own replace what it inherits.
    fn within(self, dirs: &[Directive]) -> ReadTimeouts {
        let mut out = self;
        for (i, module) in READ_TIMEOUT_MODULES.iter().enumerate() {
            let own = (dirs.iter().rev())
                .find(|d| (d.name.strip_suffix("_read_timeout")).is_some_and(|m| m == *module));
            if let Some(t) = own.and_then(|d| super::nginx_time(d.arg0())) {
                out.0[i] = Some(t);
            }
        }
        out
    }

    /// The one a location passing with `pass` (`proxy_pass`) waits for, when written.
    fn of(&self, pass: &str) -> Option<Duration> {
        let module = pass.strip_suffix("_pass")?;
        let i = READ_TIMEOUT_MODULES.iter().position(|m| *m == module)?;
        self.0[i]
    }
}

/// A `limit_req` or `limit_conn` in force, and the status nginx answers a request it limits
/// with (`limit_req_status`, `limit_conn_status`; 503 by default): that answer is nginx's
/// own, and a check's burst (a check per name, each asked again) may well draw it.
#[derive(Debug, Clone, Copy)]
struct Limits {
    limited: bool,
    status: u16,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            limited: false,
            status: 503,
        }
    }
}

impl Limits {
    /// What a block inside `self` has in force: its own limits replace what it inherits.
    fn within(self, dirs: &[Directive]) -> Limits {
        let own = |names: &[&str]| dirs.iter().any(|d| names.contains(&d.name.as_str()));
        let status = (dirs.iter().rev())
            .find(|d| matches!(d.name.as_str(), "limit_req_status" | "limit_conn_status"))
            .and_then(|d| d.arg0().parse().ok())
            .unwrap_or(self.status);
        Limits {
            limited: self.limited || own(&["limit_req", "limit_conn"]),
            status,
        }
    }
}

fn server(context: Context, d: &Directive, shared: &Shared, root: &Path) -> Server {
    let maps = shared.maps;
    let mut listens: Vec<Listen> = d
        .children()
        .iter()
        .filter(|c| c.name == "listen")
        .filter_map(|c| listen(context, c))
        .collect();
    let has_listen = d.children().iter().any(|c| c.name == "listen");
    if !has_listen && context == Context::Http {
        // nginx's default for a server without `listen` (when started as root).
        listens.push(Listen {
            addr: ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80)),
            ssl: false,
            udp: false,
            ipv6only: false,
            default_server: false,
            proxy_protocol: false,
            http2: false,
            bind: false,
            file: d.file.clone(),
            line: d.line,
        });
    }
    let mut server_names: Vec<String> = d
        .children()
        .iter()
        .filter(|c| c.name == "server_name")
        .flat_map(|c| c.args.iter().map(|a| a.to_string()))
        .collect();
    // `ssl on;` (the directive form nginx 1.22 still accepts) makes every listen TLS.
    if (d.children().iter()).any(|c| c.name == "ssl" && c.arg0().eq_ignore_ascii_case("on")) {
        for l in &mut listens {
            l.ssl = true;
        }
    }
    let server_auth = Gates {
        auth: false,
        basic: false,
        auth_request: None,
        error_pages: Vec::new(),
        intercept: false,
        limits: shared.limits,
        read_timeouts: shared.read_timeouts,
        proxy_headers: shared.proxy_headers.clone(),
    }
    .within(d.children());
    let mut locations = Vec::new();
    let mut named = Vec::new();
    let mut diverted = Vec::new();
    let mut rewriters = Vec::new();
    let within = Within {
        server: d.children(),
        maps,
        root,
        by_client: shared.by_client,
        verify_client: asks_client_certificate(d.children())
            .unwrap_or_else(|| shared.verify_client.clone()),
    };
    proxied_locations(
        d.children(),
        &server_auth,
        &within,
        &mut locations,
        &mut named,
        &mut rewriters,
        &mut diverted,
    );
    let mut unbacked = Vec::new();
    unbacked_locations(d.children(), &mut unbacked);
    let mut static_files = Vec::new();
    static_locations(d.children(), &mut static_files);
    reach_named(&mut locations, &named);
    reach_diverted(&mut locations, &diverted);
    reach_internal(&mut locations, &named, d.children());
    resolve_auth_requests(&mut locations, d.children());
    resolve_rewrites(&mut locations, &rewriters, &within);
    // Thousands of servers each keep these lists: no spare capacity.
    listens.shrink_to_fit();
    server_names.shrink_to_fit();
    locations.shrink_to_fit();
    Server {
        context,
        file: d.file.clone(),
        line: d.line,
        listens,
        server_names,
        answers: match locations.is_empty() && context == Context::Http {
            true => answering_itself(d, shared.rejects_handshake),
            false => None,
        },
        locations,
        unbacked,
        static_files,
        redirects_plain: redirects_plain(d.children()).is_some(),
        plain_answer: redirects_plain(d.children()).and_then(|i| {
            let ret = i.children().iter().find(|c| c.name == "return")?;
            let cond: Vec<&str> = i.args.iter().map(|a| a.as_str()).collect();
            Some(return_location(
                ret,
                None,
                "/".into(),
                format!("if {} {{ ", cond.join(" ")),
            ))
        }),
        check_headers: gate_headers(d.children(), maps),
    }
}

/// What a server answers every request with by itself (see [`Server::answers`]): its
/// unconditional `return`, else that of its `location /`.
fn answering_itself(d: &Directive, rejects_handshake: bool) -> Option<Location> {
    let rejects = (d.children().iter().rev())
        .find(|c| c.name == "ssl_reject_handshake")
        .map_or(rejects_handshake, |c| c.arg0().eq_ignore_ascii_case("on"));
    if rejects {
        return None;
    }
    let own = |dirs: &[Directive]| dirs.iter().find(|c| c.name == "return").cloned();
    let (modifier, path, ret) = match own(d.children()) {
        Some(r) => (None, "/".to_string(), r),
        None => {
            let root = (d.children().iter()).find(|c| {
                c.name == "location" && c.block.is_some() && {
                    let (m, p) = location_args(&c.args);
                    p == "/" && matches!(m.as_deref(), None | Some("^~") | Some("="))
                }
            })?;
            let (m, p) = location_args(&root.args);
            (m, p, own(root.children())?)
        }
    };
    Some(return_location(&ret, modifier, path, String::new()))
}

/// A [`Location`] standing for what `ret` (a `return`) answers at `path`: pass `return`, its
/// text (after `prefix`, as `if ($scheme = http) { `) as the target.
fn return_location(
    ret: &Directive,
    modifier: Option<String>,
    path: String,
    prefix: String,
) -> Location {
    // `return URL;` is a 302.
    let code: u16 = ret.arg0().parse().unwrap_or(302);
    let words: Vec<&str> = std::iter::once("return")
        .chain(ret.args.iter().map(|a| a.as_str()))
        .collect();
    let close = if prefix.is_empty() { "" } else { "; }" };
    Location {
        modifier,
        path,
        pass: "return",
        target: format!("{prefix}{}{close}", words.join(" ")),
        auth_request: None,
        reach: Reach::Path("/".into()),
        auth: false,
        returns: Box::new([code]),
        client_certificate: None,
        read_timeout: None,
        websocket: false,
        websocket_endpoint: false,
        hidden_failure: None,
        host_map: None,
        uri_branches: Box::default(),
        rewritten: None,
        variants: Box::default(),
        only_when: None,
        check_headers: Vec::new(),
        spread_sources: false,
        file: ret.file.clone(),
        line: ret.line,
    }
}

/// Each requested `location` (nested ones too) whose `try_files` ends in `=CODE` and that
/// passes nowhere: files or nginx's own status answer it.
fn unbacked_locations(dirs: &[Directive], out: &mut Vec<Unbacked>) {
    for d in (dirs.iter()).filter(|d| d.name == "location" && d.block.is_some()) {
        let (modifier, path) = location_args(&d.args);
        let internal = d.children().iter().any(|c| c.name == "internal");
        let try_files = d.children().iter().rev().find(|c| c.name == "try_files");
        let to_status = try_files
            .and_then(|t| t.args.last())
            .is_some_and(|last| last.starts_with('='));
        if to_status && !internal && !path.starts_with('@') && pass_in(d.children()).is_none() {
            let args: Vec<&str> =
                try_files.map_or(Vec::new(), |t| t.args.iter().map(|a| a.as_str()).collect());
            out.push(Unbacked {
                what: format!("location {}", location_key(modifier.as_deref(), &path)),
                modifier: modifier.clone(),
                path: path.clone(),
                try_files: format!("try_files {}", args.join(" ")),
                file: d.file.clone(),
                line: d.line,
            });
        }
        unbacked_locations(d.children(), out);
    }
}

/// Each requested `location` (nested ones too) with no `*_pass`, `return`, `rewrite` or
/// `try_files` of its own: nginx's static handler answers it from `root` or `alias`.
fn static_locations(dirs: &[Directive], out: &mut Vec<(Option<String>, String)>) {
    for d in (dirs.iter()).filter(|d| d.name == "location" && d.block.is_some()) {
        let (modifier, path) = location_args(&d.args);
        let own = d.children();
        let answers = |n: &str| own.iter().any(|c| c.name == n);
        let files = !answers("internal")
            && !path.starts_with('@')
            && pass_in(own).is_none()
            && !["return", "rewrite", "try_files", "if"]
                .iter()
                .any(|n| answers(n));
        if files {
            out.push((modifier, path));
        }
        static_locations(own, out);
    }
}

/// A `listen` read as nginx does; `None` for what nginx would reject (`nginx -t` reports it).
fn listen(context: Context, d: &Directive) -> Option<Listen> {
    let addr = listen_addr(context, d.args.first()?)?;
    let flag = |f: &str| d.args[1..].iter().any(|a| a == f);
    let v6 = matches!(&addr, ListenAddr::Tcp(sa) if sa.is_ipv6());
    Some(Listen {
        addr,
        ssl: flag("ssl"),
        udp: flag("udp"),
        ipv6only: v6 && !flag("ipv6only=off"),
        default_server: flag("default_server") || flag("default"),
        proxy_protocol: flag("proxy_protocol"),
        http2: flag("http2"),
        bind: d.args[1..].iter().any(|a| {
            let name = a.split('=').next().unwrap_or("");
            const BINDS: [&str; 10] = [
                "bind",
                "backlog",
                "rcvbuf",
                "sndbuf",
                "accept_filter",
                "deferred",
                "ipv6only",
                "reuseport",
                "so_keepalive",
                "setfib",
            ];
            BINDS.contains(&name) || name == "fastopen"
        }),
        file: d.file.clone(),
        line: d.line,
    })
}

/// The address of a `listen` as nginx reads it (`80` is `*:80`; http's default port is 80);
/// `None` for what nginx would reject.
pub fn listen_addr(context: Context, text: &str) -> Option<ListenAddr> {
    let default_port = (context == Context::Http).then_some(80);
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        addr::parse(&format!("*:{text}"), None)
    } else {
        addr::parse(text, default_port)
    };
    Some(match parsed.ok()? {
        Parsed::Ip(sa) => ListenAddr::Tcp(sa),
        Parsed::Host { name, port } => ListenAddr::Host { name, port },
        Parsed::Unix(p) => ListenAddr::Unix(p),
    })
}

/// The server block the locations are read from, the configuration's maps, and the root
/// places are said relative to.
struct Within<'a> {
    server: &'a [Directive],
    maps: &'a HostMaps,
    root: &'a Path,
    /// The variables whose value depends on the client's address (see
    /// [`variants::by_client`]).
    by_client: &'a [variants::ByClient],
    /// `ssl_verify_client on` in force for the server (its own, else `http`'s): where it
    /// is written.
    verify_client: Option<(Arc<Path>, u32)>,
}

/// What nginx checks before passing a request on, inherited into nested blocks.
struct Gates<'a> {
    /// `auth_basic`, `auth_request` or `deny` (see [`inherit_auth`]).
    auth: bool,
    /// `auth_basic` or `deny`: what answers 401/403 without asking a backend.
    basic: bool,
    /// The URI `auth_request` asks.
    auth_request: Option<&'a str>,
    /// The `error_page` directives in force: a block's own replace what it inherits.
    error_pages: Vec<&'a Directive>,
    /// `proxy_intercept_errors` (or its fastcgi, uwsgi, scgi, grpc kin) is on.
    intercept: bool,
    /// A `limit_req` or `limit_conn` in force, and the status it answers with.
    limits: Limits,
    /// The `*_read_timeout`s in force.
    read_timeouts: ReadTimeouts,
    /// The `proxy_set_header` lines in force: a block's own replace every one it inherits.
    proxy_headers: Vec<&'a Directive>,
}

impl<'a> Gates<'a> {
    /// What a block inside `self` has in force.
    fn within(&self, dirs: &'a [Directive]) -> Gates<'a> {
        let own: Vec<&Directive> = dirs.iter().filter(|d| d.name == "error_page").collect();
        let intercept = (dirs.iter().rev())
            .find(|d| d.name.ends_with("_intercept_errors"))
            .map_or(self.intercept, |d| d.arg0().eq_ignore_ascii_case("on"));
        Gates {
            auth: inherit_auth(self.auth, dirs),
            basic: inherit_basic(self.basic, dirs),
            auth_request: inherit_auth_request(self.auth_request, dirs),
            error_pages: if own.is_empty() {
                self.error_pages.clone()
            } else {
                own
            },
            intercept,
            limits: self.limits.within(dirs),
            read_timeouts: self.read_timeouts.within(dirs),
            proxy_headers: inherit_headers(&self.proxy_headers, dirs),
        }
    }
}

/// The `proxy_set_header` lines a block has in force: its own where it has any (they replace
/// every one it inherits, nginx's rule for array directives), else the enclosing block's.
fn inherit_headers<'a>(outer: &[&'a Directive], dirs: &'a [Directive]) -> Vec<&'a Directive> {
    let own: Vec<&Directive> = (dirs.iter())
        .filter(|d| d.name == "proxy_set_header")
        .collect();
    match own.is_empty() {
        true => outer.to_vec(),
        false => own,
    }
}

/// Where a request is sent on to another location (`try_files`, `error_page`): `@app` or a
/// URI, and the path that makes nginx send it there, or why no request can be made to.
type Fallback = (String, Result<String, String>);

/// A named location a location sends requests to with its own `return` in an `if` on the
/// request (`if ($http_x_canary = 1) { return 418; }` with `error_page 418 = @canary;`): the
/// target, the path, and what a request carries to meet the condition.
type Diverted = (String, String, Variant);

/// Each `location` (nested ones too) that holds a `*_pass`, directly or inside its `if` or
/// `limit_except` blocks, or asks an `auth_request` (which [`resolve_auth_requests`] keeps
/// only when the subrequest reaches a backend). `named` collects where requests fall through
/// to another location (`try_files ... @app`, `error_page 404 @app`, `error_page 502
/// /fallback`), see [`Fallback`]; `rewriters` the requested locations with no backend that
/// `rewrite` (see [`resolve_rewrites`]), each with how a request reaches it.
fn proxied_locations<'a>(
    dirs: &'a [Directive],
    outer: &Gates<'a>,
    within: &Within,
    out: &mut Vec<Location>,
    named: &mut Vec<Fallback>,
    rewriters: &mut Vec<Rewriter<'a>>,
    diverted: &mut Vec<Diverted>,
) {
    for d in dirs
        .iter()
        .filter(|d| d.name == "location" && d.block.is_some())
    {
        let (modifier, path) = location_args(&d.args);
        let gates = outer.within(d.children());
        let prefix = modifier.is_none() || modifier.as_deref() == Some("^~");
        let passes = pass_in(d.children()).is_some();
        let internal = d.children().iter().any(|c| c.name == "internal");
        let requested = prefix && !internal && !path.starts_with('@');
        let fallen = fallbacks(d.children(), &gates, passes, &path, requested, within.root);
        named.extend(fallen);
        if requested {
            diverted.extend(diverting(
                d.children(),
                &gates.error_pages,
                &path,
                within.maps,
            ));
        }
        // A `return` answers before the access phase: no subrequest is made then.
        let answers = d.children().iter().any(|c| c.name == "return");
        // The plain request gets the location's own `*_pass`, not one inside an `if`.
        let own = direct_pass(d.children());
        let holder = (d.children().iter()).find(|c| {
            matches!(c.name.as_str(), "if" | "limit_except") && pass_in(c.children()).is_some()
        });
        let only_when = match holder {
            Some(i) if own.is_none() && i.name == "if" => only_inside(i, within.maps),
            _ => None,
        };
        let pass = own.or_else(|| pass_in(d.children())).or_else(|| {
            let asks =
                (gates.auth_request).filter(|_| !internal && !answers && !path.starts_with('@'));
            asks.map(|uri| ("auth_request", uri))
        });
        let reach = || match modifier.as_deref() {
            _ if path.starts_with('@') => {
                Reach::Unknown("no try_files or error_page leads here".into())
            }
            _ if internal => Reach::Unknown(
                "internal: reached only by an X-Accel-Redirect from the backend (no try_files, \
                 error_page or rewrite leads here)"
                    .into(),
            ),
            Some(m @ ("~" | "~*")) => {
                let mut paths = index_scripts(within.server, d);
                paths.extend(example::examples(&path, m == "~*", example::Kind::Path));
                match paths {
                    paths if paths.is_empty() => {
                        Reach::Unknown("no matching path could be derived from the regex".into())
                    }
                    paths => landing(within, d, &paths),
                }
            }
            Some("=") => Reach::Path(path.clone()),
            _ => landing(within, d, &[path.clone(), missing_path_under(&path)]),
        };
        let rewrites_only = pass.is_none() && rewrites::rewrites(d.children());
        if rewrites_only && !internal && !path.starts_with('@') {
            rewriters.push((d, reach(), None));
        }
        if !internal && !path.starts_with('@') {
            for i in rewriting_ifs(d.children()) {
                rewriters.push((d, reach(), Some(i)));
            }
        }
        if let Some(pass) = pass {
            let reach = reach();
            let hidden_failure = (gates.intercept && passes)
                .then(|| sends_failures(&gates.error_pages, within.root))
                .flatten();
            // The server's own `return`s (`if ($scheme = http) { return 301 ...; }`) answer
            // before any location is chosen: nginx's answers too.
            let mut returns = Vec::new();
            returns_in(d.children(), &mut returns);
            returns_in(within.server, &mut returns);
            if gates.limits.limited {
                returns.push(gates.limits.status);
            }
            let uri_map = host_map::of_target(within.maps, pass.1, Source::is_path);
            let mut uri_branches = match (&uri_map, &reach) {
                (Some(map), Reach::Path(own)) => uri_map::branches(map, own, within.server, d),
                _ => Vec::new(),
            };
            if let (Some(m @ ("~" | "~*")), Reach::Path(own)) = (modifier.as_deref(), &reach) {
                uri_branches.extend(capture_branches(within.server, d, m, &path, own, pass.1));
                if passes_upgrade(&gates.proxy_headers) {
                    uri_branches.extend(alternative_branches(within.server, d, m, &path, own));
                }
            }
            let mut variants = variants::of_map(within.maps, pass.1);
            let in_if = |dirs: &'a [Directive]| pass_in(dirs).map(|p| p.1);
            variants.extend(variants::of_ifs(
                d.children(),
                Some(pass.1),
                within.maps,
                in_if,
            ));
            variants.extend(limit_except_pass(d.children(), own.map(|o| o.1)));
            variants.extend(variants::of_client(within.by_client, pass.1));
            // A method `limit_except` denies to everyone never reaches the backend.
            variants.retain(|v| (v.method.as_deref()).is_none_or(|m| !denied(d.children(), m)));
            let limited = limit_except(d.children());
            variants.extend(limited.clone());
            // Behind `limit_except POST { deny all; }` the GET gets nginx's 403, which no
            // credentials get past; behind `{ auth_basic ...; }` its 401.
            let limiting =
                (d.children().iter()).find(|c| c.name == "limit_except" && c.block.is_some());
            let limited_by_auth = limited.is_some()
                && limiting.is_some_and(|l| inherit_basic(false, l.children()) && !denies(l));
            if limited.is_some() && !limited_by_auth {
                returns.push(403);
            }
            // A TLS server that asks every client for a certificate (`ssl_verify_client
            // on`) answers a check that has none with its own 400 (or 495/496).
            if within.verify_client.is_some() {
                returns.extend([400, 495, 496]);
            }
            let websocket = passes_upgrade(&gates.proxy_headers);
            let endpoint = websocket && websocket_endpoint(d.children(), &path);
            out.push(Location {
                modifier,
                path,
                pass: pass.0,
                target: pass.1.to_string(),
                auth_request: gates.auth_request.map(String::from),
                reach,
                // With no `*_pass`, the subrequest's backend is the one checked: its 401 or
                // 403 is its own answer, not nginx's.
                auth: match pass.0 {
                    "auth_request" => gates.basic,
                    _ => gates.auth || limited_by_auth,
                },
                returns: returns.into_boxed_slice(),
                client_certificate: within.verify_client.clone(),
                read_timeout: gates.read_timeouts.of(pass.0),
                websocket,
                websocket_endpoint: endpoint,
                hidden_failure,
                host_map: host_map::of_target(within.maps, pass.1, Source::is_host),
                uri_branches: uri_branches.into_boxed_slice(),
                rewritten: None,
                variants: variants.into_boxed_slice(),
                only_when,
                check_headers: gate_headers(d.children(), within.maps),
                // Another server's `geo` or `split_clients` is no reason to keep one address.
                spread_sources: gates.limits.limited
                    && !gates.auth
                    && variants::of_client(within.by_client, pass.1).is_empty(),
                file: d.file.clone(),
                line: d.line,
            });
        }
        proxied_locations(
            d.children(),
            &gates,
            within,
            out,
            named,
            rewriters,
            diverted,
        );
    }
}

/// The first of `paths` nginx brings to location `d`, else why none reaches it: an exact or
/// regex location of the same server takes it first (`location = /api/` in front of
/// `location /api/`). A path whose location cannot be told (a regex this tool does not
/// evaluate) is kept.
/// The other values a capture group of the regex location `d` (`pattern`, `modifier` `~` or
/// `~*`) takes where its `*_pass` target reads it (`proxy_pass http://$svc/$rest;` behind
/// `(?<svc>alpha|beta)`): each a path of its own that gets the value and lands on `d`, else
/// why none does. The value `own` (the location's checked path) gets is its own check's.
fn capture_branches(
    server: &[Directive],
    d: &Directive,
    modifier: &str,
    pattern: &str,
    own: &str,
    target: &str,
) -> Vec<uri_map::Branch> {
    let caseless = modifier == "~*";
    let Ok(re) = regex::RegexBuilder::new(pattern)
        .case_insensitive(caseless)
        .build()
    else {
        return Vec::new();
    };
    let lands_here = |p: &str| {
        re.is_match(p)
            && matches!(pick::location(server, p), Picked::Location(l) if std::ptr::eq(l, d))
    };
    let mut out = Vec::new();
    let read = crate::conf::captures::captures(pattern);
    for cap in read.iter().filter(|c| c.read_in(target)) {
        let own_value = (re.captures(own)).and_then(|c| c.get(cap.index as usize));
        let var = cap.name.clone().unwrap_or_else(|| cap.index.to_string());
        for value in &cap.values {
            let got = |m: regex::Match| {
                m.as_str() == value || (caseless && m.as_str().eq_ignore_ascii_case(value))
            };
            if own_value.is_some_and(got) {
                continue;
            }
            let fixed = cap.fixed(pattern, value);
            let path = (example::examples(&fixed, caseless, example::Kind::Path).into_iter())
                .find(|p| lands_here(p));
            out.push(uri_map::Branch {
                what: format!("location capture ${var} {value}"),
                reach: path.ok_or_else(|| {
                    format!(
                        "no path that gets {value} could be derived, or another location \
                         answers it: what it routes to is not verified"
                    )
                }),
                file: d.file.clone(),
                line: d.line,
            });
        }
    }
    out
}

/// The most other branches of a WebSocket location's regex checked besides its own path.
const MAX_ALTERNATIVES: usize = 3;

/// A path for each other branch of the regex of a location that passes `Upgrade` on
/// (`~ ^/(ws|socket\.io)/`: `/socket.io/` beside `/ws/`), where it lands on this location:
/// one socket path per branch, since a typo in one branch (or a new location taking its
/// paths) leaves those clients' handshakes to another location's app, which answers them with
/// its own 400 while the first branch still switches.
fn alternative_branches(
    server: &[Directive],
    d: &Directive,
    modifier: &str,
    pattern: &str,
    own: &str,
) -> Vec<uri_map::Branch> {
    let first_segment = |p: &str| {
        p.trim_start_matches('/')
            .split('/')
            .next()
            .map(str::to_string)
    };
    let mut segments = vec![first_segment(own)];
    let mut out = Vec::new();
    for path in example::examples(pattern, modifier == "~*", example::Kind::Path) {
        if out.len() == MAX_ALTERNATIVES {
            break;
        }
        let segment = first_segment(&path);
        let here =
            matches!(pick::location(server, &path), Picked::Location(l) if std::ptr::eq(l, d));
        if !here || segments.contains(&segment) {
            continue;
        }
        segments.push(segment);
        out.push(uri_map::Branch {
            what: format!("its regex's branch for {path}"),
            reach: Ok(path),
            file: d.file.clone(),
            line: d.line,
        });
    }
    out
}

/// The server's `index` files that exist under the regex location `d`'s `root` (its own, else
/// the server's), as paths (`/index.php`), when the location's regex matches them: a real
/// script for a PHP site's `location ~ \.php$` behind `index index.php`, which `/` reaches
/// through the index too. A made-up `/safe-reload-check.php` gets php-fpm's own 404 before
/// and after a change that sends every page to a wrong docroot, and verified nothing.
fn index_scripts(server: &[Directive], d: &Directive) -> Vec<String> {
    let last = |dirs: &[Directive], name: &str| -> Option<Vec<String>> {
        let found = dirs.iter().rev().find(|c| c.name == name)?;
        Some(found.args.iter().map(|a| a.to_string()).collect())
    };
    let Some(root) = last(d.children(), "root")
        .or_else(|| last(server, "root"))
        .and_then(|r| r.into_iter().next())
        .filter(|r| r.starts_with('/') && !r.contains('$'))
    else {
        return Vec::new();
    };
    let (modifier, pattern) = location_args(&d.args);
    let Ok(re) = regex::RegexBuilder::new(&pattern)
        .case_insensitive(modifier.as_deref() == Some("~*"))
        .build()
    else {
        return Vec::new();
    };
    let names = last(server, "index").unwrap_or_else(|| vec!["index.html".into()]);
    (names.iter())
        .filter(|n| !n.contains('$') && !n.starts_with('/') && !n.contains(".."))
        .map(|n| format!("/{n}"))
        .filter(|p| re.is_match(p) && Path::new(&root).join(&p[1..]).is_file())
        .collect()
}

fn landing(within: &Within, d: &Directive, paths: &[String]) -> Reach {
    let mut taken = Vec::new();
    for p in paths {
        match pick::location(within.server, p) {
            Picked::Location(l) if l.line != d.line || *l.file != *d.file => {
                let (m, lp) = location_args(&l.args);
                taken.push(format!(
                    "{p} by location {} ({})",
                    location_key(m.as_deref(), &lp),
                    place(&l.file, l.line, within.root)
                ));
            }
            _ => return Reach::Path(p.clone()),
        }
    }
    Reach::Unknown(format!(
        "another location answers every path derived for it: {}",
        taken.join(", ")
    ))
}

/// The URI `auth_request` asks in a block: its own (`off` cancels what it inherits), else the
/// outer block's.
fn inherit_auth_request<'a>(outer: Option<&'a str>, dirs: &'a [Directive]) -> Option<&'a str> {
    match dirs.iter().rev().find(|d| d.name == "auth_request") {
        Some(d) if d.arg0().eq_ignore_ascii_case("off") => None,
        Some(d) => Some(d.arg0()),
        None => outer,
    }
}

/// Follow each `auth_request` to the location nginx picks for its URI. A location with no
/// `*_pass` of its own is checked for what that location passes to, and dropped when it
/// passes nowhere (the subrequest reaches no backend); an `internal` location reached this
/// way is verified by the requests of the locations that ask it, never requested itself.
fn resolve_auth_requests(locations: &mut Vec<Location>, server: &[Directive]) {
    let mut answering: Vec<Option<usize>> = Vec::with_capacity(locations.len());
    for (i, loc) in locations.iter().enumerate() {
        let found = loc.auth_request.as_deref().and_then(|uri| {
            let path = uri_path(uri);
            let Picked::Location(d) = pick::location(server, path) else {
                return None;
            };
            (locations.iter())
                .position(|l| l.line == d.line && *l.file == *d.file)
                .filter(|&j| j != i && locations[j].pass != "auth_request")
        });
        answering.push(found);
    }
    for (i, found) in answering.iter().enumerate() {
        let Some(j) = *found else { continue };
        if locations[i].pass == "auth_request" {
            locations[i].target = locations[j].target.clone();
        }
        if matches!(locations[j].reach, Reach::Unknown(_)) {
            locations[j].reach = Reach::Subrequest;
        }
    }
    *locations = (std::mem::take(locations).into_iter().zip(answering))
        .filter(|(l, found)| l.pass != "auth_request" || found.is_some())
        .map(|(l, _)| l)
        .collect();
}

/// A requested location that rewrites (see [`resolve_rewrites`]), how a request reaches it,
/// and the `if` on the request its `rewrite` is in, if it is in one.
type Rewriter<'a> = (&'a Directive, Reach, Option<&'a Directive>);

/// The `if` blocks directly in `dirs` that hold a `rewrite`.
fn rewriting_ifs(dirs: &[Directive]) -> impl Iterator<Item = &Directive> {
    (dirs.iter())
        .filter(|d| d.name == "if" && d.block.is_some() && rewrites::rewrites(d.children()))
}

/// Where a `rewrite` sends a request to a location with a backend.
struct Landing<'d> {
    /// The location it lands on, among the server's locations.
    to: usize,
    /// The URI it holds there.
    uri: String,
    /// The rewriting location, or the server-level `rewrite` (or `if`) directive.
    from: &'d Directive,
    /// The path requested.
    path: String,
    server: bool,
    /// The `if` on the request the `rewrite` is in.
    when: Option<Variant>,
}

/// Paths derived from the regexes of the `rewrite` directives in `dirs`.
fn derived_paths(dirs: &[Directive]) -> impl Iterator<Item = String> + '_ {
    (dirs.iter())
        .filter(|d| d.name == "rewrite" && !d.args.is_empty())
        .flat_map(|d| example::examples(&d.args[0], false, example::Kind::Path))
}

/// The locations with no backend of their own that `rewrite` requests to one (`location / {
/// rewrite ^/(.*)$ /v1/$1 last; }`), and each server-level `rewrite` that does so for a path
/// derived from its regex: each is checked as the location it rewrites to, on its own path, so
/// a change to where the rewrite sends requests is seen. A `rewrite` in an `if` on the request
/// (`if ($arg_v = 2)`, `if ($is_bot)` on a `map $http_user_agent`) is checked by a request
/// that meets the condition. An `internal` location reached this way is verified through them
/// (see [`Reach::Subrequest`]).
fn resolve_rewrites(locations: &mut Vec<Location>, rewriters: &[Rewriter], within: &Within) {
    let (server, root) = (within.server, within.root);
    let backed =
        |d: &Directive| (locations.iter()).position(|l| l.line == d.line && *l.file == *d.file);
    let mut found: Vec<Landing> = Vec::new();
    for &(from, ref reach, taken) in rewriters {
        let Reach::Path(own) = reach else { continue };
        let mut own = own.clone();
        let prefix = matches!(location_args(&from.args).0.as_deref(), None | Some("^~"));
        let when = match taken {
            Some(i) => match variants::of_condition(i, within.maps) {
                // A method the location's `limit_except` denies never reaches its `if`.
                Some(v) if (v.method.as_deref()).is_some_and(|m| denied(from.children(), m)) => {
                    continue
                }
                Some(v) => Some(v),
                // `if (!-e $request_filename) { rewrite ^/(.*)$ /index.php?q=$1 last; }`: a
                // path no file has meets it.
                None if missing_file_test(i) && prefix => {
                    own = missing_path_under(&own);
                    None
                }
                None if file_test(i) => continue,
                None => Some(unmet(i)),
            },
            None => None,
        };
        // Its own path first, then paths derived from its rewrites' regexes that nginx brings
        // to it (`location /old { rewrite ^/old/(.*)$ ...; }` rewrites `/old/x`, not `/old`).
        let rules = taken.map_or(from.children(), Directive::children);
        let derived = derived_paths(rules).filter(
            |p| matches!(pick::location(server, p), Picked::Location(l) if std::ptr::eq(l, from)),
        );
        let landed = std::iter::once(own).chain(derived).find_map(|path| {
            let rewrites::Outcome::Search(uri) =
                rewrites::apply_taking(from.children(), &path, taken)
            else {
                return None;
            };
            let (to, uri) = rewrites::land(server, uri, |l| backed(l).is_some())?;
            Some(Landing {
                to: backed(to).filter(|_| !std::ptr::eq(to, from))?,
                uri,
                from,
                path,
                server: false,
                when: when.clone(),
            })
        });
        found.extend(landed);
    }
    let plain = (server.iter()).filter(|d| d.name == "rewrite" && !d.args.is_empty());
    let plain = plain.map(|r| (r, None, None));
    let conditional = rewriting_ifs(server).filter_map(|i| {
        let when = variants::of_condition(i, within.maps)?;
        Some((i, Some(i), Some(when)))
    });
    for (r, taken, when) in plain.chain(conditional) {
        let mut paths: Vec<String> = match taken {
            Some(i) => derived_paths(i.children()).collect(),
            None => example::examples(&r.args[0], false, example::Kind::Path),
        };
        // `rewrite ^ /prerender$uri last;` takes every path: none is derived from `^`.
        paths.push("/".into());
        let landed = paths.iter().find_map(|p| {
            let uri = match rewrites::apply_taking(server, p, taken) {
                rewrites::Outcome::Search(u) | rewrites::Outcome::Stays(u) => u,
                _ => return None,
            };
            let (to, uri) = rewrites::land(server, uri, |l| backed(l).is_some())?;
            Some(Landing {
                to: backed(to)?,
                uri,
                from: r,
                path: p.clone(),
                server: true,
                when: when.clone(),
            })
        });
        found.extend(landed);
    }
    let mut added = Vec::new();
    for l in found {
        let to = &locations[l.to];
        let mut what = format!(
            "rewritten to {} (location {}, {})",
            l.uri,
            to.key(),
            place(&to.file, to.line, root)
        );
        let (modifier, path) = match l.server {
            true => {
                let at = place(&l.from.file, l.from.line, root);
                // An `if`'s first `rewrite`; its condition is told with the check's variant.
                let r = match &l.when {
                    Some(_) => (l.from.children().iter()).find(|d| d.name == "rewrite"),
                    None => Some(l.from),
                };
                let regex = r.map_or("", |r| r.arg0());
                what = format!("rewrite {regex} ({at}) {what}");
                (None, l.path.clone())
            }
            false => location_args(&l.from.args),
        };
        let checked = l.when.as_ref().is_none_or(|w| w.send.is_ok());
        added.push(Location {
            modifier,
            path,
            reach: Reach::Path(l.path),
            uri_branches: Box::default(),
            variants: match l.when {
                Some(_) => Box::default(),
                None => to.variants.clone(),
            },
            rewritten: Some(Rewritten {
                server: l.server,
                what,
                when: l.when.clone(),
            }),
            file: l.from.file.clone(),
            line: l.from.line,
            ..to.clone()
        });
        match (&l.when, &to.reach) {
            (_, Reach::Unknown(_)) if checked => locations[l.to].reach = Reach::Subrequest,
            (Some(w), Reach::Unknown(_)) => {
                locations[l.to].reach = Reach::Unknown(format!(
                    "reached only through the rewrite in {} ({}), which no check takes: {}",
                    w.what,
                    place(&w.file, w.line, root),
                    w.send.as_ref().err().map_or("", String::as_str)
                ))
            }
            _ => {}
        }
    }
    locations.extend(added);
}

/// `site.conf:3`, relative to the configuration root when inside it.
fn place(file: &Path, line: u32, root: &Path) -> String {
    format!(
        "{}:{line}",
        file.strip_prefix(root).unwrap_or(file).display()
    )
}

/// Whether nginx itself may refuse requests in a block: its own `auth_basic`/`auth_request`
/// (`off` cancels what it inherits) or else the outer block's, or a `deny`.
fn inherit_auth(outer: bool, dirs: &[Directive]) -> bool {
    let own = |name: &str| {
        (dirs.iter().rev().find(|d| d.name == name)).map(|d| !d.arg0().eq_ignore_ascii_case("off"))
    };
    let basic = own("auth_basic");
    let request = own("auth_request");
    let inherited = match (basic, request) {
        (None, None) => outer,
        (b, r) => b.unwrap_or(false) || r.unwrap_or(false),
    };
    inherited || dirs.iter().any(|d| d.name == "deny")
}

/// Whether `auth_basic` (its own, `off` cancelling what it inherits, else the outer block's)
/// or a `deny` applies in a block.
fn inherit_basic(outer: bool, dirs: &[Directive]) -> bool {
    let own = (dirs.iter().rev().find(|d| d.name == "auth_basic"))
        .map(|d| !d.arg0().eq_ignore_ascii_case("off"));
    own.unwrap_or(outer) || dirs.iter().any(|d| d.name == "deny")
}

/// Where a location sends requests on (`try_files`' last argument, an `error_page` target: a
/// named location or a URI), each with the path that makes nginx do it or why none does. A
/// missing file under a prefix location that is requested at all (`requested`) falls through
/// `try_files`, and gets a 404 that `error_page 404` takes where no backend answers it
/// (`passes`); a backend's 404 or failure cannot be made by a check.
fn fallbacks(
    dirs: &[Directive],
    gates: &Gates,
    passes: bool,
    path: &str,
    requested: bool,
    root: &Path,
) -> Vec<Fallback> {
    let missing = || missing_path_under(path);
    let mut out = Vec::new();
    if let Some(d) = dirs.iter().rev().find(|d| d.name == "try_files") {
        let last = d.args.last().map(|w| w.as_str()).unwrap_or("");
        if requested && (last.starts_with('@') || last.starts_with('/')) {
            let target = last
                .replace("$uri", &missing())
                .replace("${uri}", &missing());
            out.push((target, Ok(missing())));
        }
    }
    for d in &gates.error_pages {
        let target = d.args.last().map(|w| w.as_str()).unwrap_or("");
        if !(target.starts_with('@') || target.starts_with('/')) {
            continue;
        }
        let codes: Vec<&str> = (d.args.iter())
            .map(|a| a.as_str())
            .filter(|a| a.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        let forced = requested && !passes && codes.contains(&"404");
        let why = format!(
            "reached only when the backend of location {path} answers {} (error_page at \
             {}): no check can make it",
            codes.join(" or "),
            place(&d.file, d.line, root)
        );
        out.push((
            target.to_string(),
            if forced { Ok(missing()) } else { Err(why) },
        ));
    }
    out
}

/// The first `error_page` in force that sends a backend's 502 or 504 elsewhere, as said:
/// `error_page 502 504 = @fallback (site.conf:7)`.
fn sends_failures(error_pages: &[&Directive], root: &Path) -> Option<String> {
    let d = (error_pages.iter()).find(|d| d.args.iter().any(|a| a == "502" || a == "504"))?;
    let args: Vec<&str> = d.args.iter().map(|a| a.as_str()).collect();
    Some(format!(
        "error_page {} ({})",
        args.join(" "),
        place(&d.file, d.line, root)
    ))
}

/// A path under a prefix location that names no file: `try_files` falls through for it.
pub(crate) fn missing_path_under(prefix: &str) -> String {
    const NAME: &str = "safe-reload-check";
    if prefix.ends_with('/') {
        format!("{prefix}{NAME}")
    } else {
        format!("{prefix}/{NAME}")
    }
}

/// Give each named location the path of the first location that falls through to it, else
/// why no request reaches it.
fn reach_named(locations: &mut [Location], named: &[Fallback]) {
    for loc in locations.iter_mut().filter(|l| l.path.starts_with('@')) {
        let to = || named.iter().filter(|(n, _)| *n == loc.path);
        let forced = to().find_map(|(_, r)| r.as_ref().ok());
        match (forced, to().find_map(|(_, r)| r.as_ref().err())) {
            (Some(path), _) => loc.reach = Reach::Path(path.clone()),
            (None, Some(why)) => loc.reach = Reach::Unknown(why.clone()),
            (None, None) => {}
        }
    }
}

/// The named locations (or URIs) `error_page` sends requests to when the location's own
/// `return` in an `if` on the request gives one of its codes, with what meets the condition.
fn diverting(
    dirs: &[Directive],
    error_pages: &[&Directive],
    path: &str,
    maps: &variants::Maps,
) -> Vec<Diverted> {
    let mut out = Vec::new();
    for i in dirs.iter().filter(|d| d.name == "if" && d.block.is_some()) {
        let Some(code) = (i.children().iter())
            .find(|c| c.name == "return")
            .map(|r| r.arg0().to_string())
        else {
            continue;
        };
        let Some(page) = error_pages
            .iter()
            .find(|e| e.args.iter().any(|a| *a == code))
        else {
            continue;
        };
        let target = page.args.last().map_or("", |w| w.as_str());
        if !target.starts_with('@') {
            continue;
        }
        if let Some(v) = variants::of_condition(i, maps).filter(|v| v.send.is_ok()) {
            out.push((target.to_string(), path.to_string(), v));
        }
    }
    out
}

/// A named location only a [`Diverted`] request reaches is checked with such a request.
fn reach_diverted(locations: &mut [Location], diverted: &[Diverted]) {
    for loc in locations.iter_mut().filter(|l| l.path.starts_with('@')) {
        if matches!(loc.reach, Reach::Path(_)) {
            continue;
        }
        if let Some((_, path, v)) = diverted.iter().find(|(t, ..)| *t == loc.path) {
            loc.reach = Reach::Path(path.clone());
            loc.only_when = Some(v.clone());
        }
    }
}

/// Give each `internal` location the path of a location whose `try_files` or `error_page`
/// sends a request to a URI nginx picks it for, else why no request reaches it. A regex
/// location a `try_files` sends requests to (WordPress: `location / { try_files $uri $uri/
/// /index.php?$args; }` in front of `location ~ \.php$`) is checked through it too: the
/// request runs the application's own entry point, where a made-up path matching the regex
/// gets the backend's "no such script".
fn reach_internal(locations: &mut [Location], named: &[Fallback], server: &[Directive]) {
    let mut through_try_files = Vec::new();
    for (uri, reach) in named.iter().filter(|(n, _)| n.starts_with('/')) {
        let path = uri_path(uri);
        if path.contains('$') {
            continue;
        }
        let Picked::Location(d) = pick::location(server, path) else {
            continue;
        };
        let Some(loc) = (locations.iter_mut()).find(|l| l.line == d.line && *l.file == *d.file)
        else {
            continue;
        };
        let internal = d.children().iter().any(|c| c.name == "internal");
        let regex = matches!(loc.modifier.as_deref(), Some("~") | Some("~*"));
        let unknown = matches!(loc.reach, Reach::Unknown(_));
        match reach {
            Ok(p) if internal && unknown => loc.reach = Reach::Path(p.clone()),
            Err(why) if internal && unknown => loc.reach = Reach::Unknown(why.clone()),
            Ok(p) if regex && !internal && !through_try_files.contains(&(d.line, &d.file)) => {
                through_try_files.push((d.line, &d.file));
                loc.reach = Reach::Path(p.clone());
            }
            _ => {}
        }
    }
}

/// Whether a server-level `if` on `$scheme` answers plain-HTTP requests with a `return`:
/// `if ($scheme = http)`, `if ($scheme != https)`, `if ($scheme != "https")`.
fn redirects_plain(server: &[Directive]) -> Option<&Directive> {
    server.iter().find(|d| {
        let cond: Vec<String> = (d.args.iter())
            .map(|w| {
                w.as_str()
                    .trim_matches(['(', ')', '"', '\''])
                    .to_ascii_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect();
        let plain = matches!(
            cond.iter().map(String::as_str).collect::<Vec<_>>()[..],
            ["$scheme", "=", "http"] | ["$scheme", "!=", "https"]
        );
        d.name == "if" && plain && d.children().iter().any(|c| c.name == "return")
    })
}

/// The headers that keep the checks from a server-level `if` that returns or rewrites, which
/// the plain check would meet (see [`variants::avoiding`]): the clients nginx serves send them.
fn gate_headers(server: &[Directive], maps: &HostMaps) -> Vec<(String, String)> {
    let acts =
        |d: &Directive| (d.children().iter()).any(|c| c.name == "return" || c.name == "rewrite");
    let mut out: Vec<(String, String)> = Vec::new();
    for d in server
        .iter()
        .filter(|d| d.name == "if" && d.block.is_some() && acts(d))
    {
        if let Some((name, value)) = variants::avoiding(d, maps) {
            if !out.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                out.push((name, value));
            }
        }
    }
    out
}

/// The path of a URI `try_files` or `auth_request` goes to, without its query: the text
/// before `?`, or before the variables that add one (`/index.php$is_args$args`, WordPress's
/// and Symfony's spelling; `/index.php$args`).
fn uri_path(uri: &str) -> &str {
    let path = uri.split('?').next().unwrap_or(uri);
    [
        "$is_args",
        "${is_args}",
        "$args",
        "${args}",
        "$query_string",
        "${query_string}",
    ]
    .iter()
    .filter_map(|v| path.find(v))
    .min()
    .map_or(path, |at| &path[..at])
}

/// The statuses nginx answers itself in a block: its `return`s (also inside `if` and
/// `limit_except`), and a `try_files` that ends in `=404`.
fn returns_in(dirs: &[Directive], out: &mut Vec<u16>) {
    for d in dirs {
        match d.name.as_str() {
            // `return URL` is a 302.
            "return" => out.push(d.arg0().parse().unwrap_or(302)),
            "try_files" => {
                let last = d.args.last().map_or("", |w| w.as_str());
                out.extend(last.strip_prefix('=').and_then(|c| c.parse::<u16>().ok()));
            }
            "if" | "limit_except" => returns_in(d.children(), out),
            _ => {}
        }
    }
}

/// A `*_pass` directly in `dirs`, not inside an `if` or `limit_except`.
fn direct_pass(dirs: &[Directive]) -> Option<(&'static str, &str)> {
    dirs.iter().find_map(|d| {
        (PASS_DIRECTIVES.iter().copied())
            .find(|p| *p == d.name)
            .map(|p| (p, d.arg0()))
    })
}

/// The location's backend is passed to only inside `if` block `i`: what meets its condition,
/// or why no check is known to. A test of a file (`!-f $request_filename`) is left to the
/// plain check, which asks for a file that does not exist.
fn only_inside(i: &Directive, maps: &variants::Maps) -> Option<Variant> {
    if let Some(v) = variants::of_condition(i, maps) {
        return Some(v);
    }
    if file_test(i) {
        return None;
    }
    Some(unmet(i))
}

/// `if` block `i`'s condition, as written inside its parentheses.
fn condition(i: &Directive) -> String {
    let cond: Vec<&str> = i.args.iter().map(|w| w.as_str()).collect();
    let cond = cond.join(" ");
    cond.trim_start_matches('(')
        .trim_end_matches(')')
        .trim()
        .to_string()
}

/// A test of a file: `-f $request_filename`, `!-e ...`, `-d`, `-x`.
fn file_test(i: &Directive) -> bool {
    let cond = condition(i);
    cond.starts_with('-') || cond.starts_with("!-")
}

/// A test that a file does not exist: `!-e`, `!-f`, `!-d`, met by a path no file has.
fn missing_file_test(i: &Directive) -> bool {
    let cond = condition(i);
    ["!-e ", "!-f ", "!-d "].iter().any(|t| cond.starts_with(t))
}

/// `if` block `i` as a variant no check takes: its condition is not on the request.
fn unmet(i: &Directive) -> Variant {
    Variant {
        target: None,
        what: format!("if ({})", condition(i)),
        send: Err(
            "the condition is not on the request's method, a cookie, a header or a query \
             parameter: no check is known to meet it"
                .into(),
        ),
        method: None,
        file: i.file.clone(),
        line: i.line,
    }
}

/// A `limit_except` block with a `*_pass` of its own (`limit_except GET HEAD { proxy_pass
/// http://writers; }`): the methods it does not name go to that backend, which no check's GET
/// reaches.
fn limit_except_pass(dirs: &[Directive], own: Option<&str>) -> Option<Variant> {
    let d = (dirs.iter()).find(|d| d.name == "limit_except" && d.block.is_some())?;
    let (_, to) = pass_in(d.children())?;
    if Some(to) == own {
        return None;
    }
    let named: Vec<String> = (d.args.iter())
        .map(|m| m.as_str().to_ascii_uppercase())
        .collect();
    Some(Variant {
        target: None,
        what: format!("limit_except {} {{ {to} }}", named.join(" ")),
        send: Err(format!(
            "only requests of another method than {} reach that backend, and a check sends \
             only GET: such a request can change data behind the backend",
            named.join(", ")
        )),
        method: None,
        file: d.file.clone(),
        line: d.line,
    })
}

/// A `limit_except` that does not let GET through (`limit_except POST { deny all; }`): nginx
/// answers a check's GET itself (403, or 401 behind `auth_basic`), and only the methods it
/// names reach the backend.
fn limit_except(dirs: &[Directive]) -> Option<Variant> {
    let d = dirs
        .iter()
        .find(|d| d.name == "limit_except" && d.block.is_some())?;
    let methods: Vec<String> = d
        .args
        .iter()
        .map(|m| m.as_str().to_ascii_uppercase())
        .collect();
    let restricts = inherit_auth(false, d.children());
    (restricts && !methods.iter().any(|m| m == "GET")).then(|| Variant {
        target: None,
        what: format!("limit_except {}", methods.join(" ")),
        method: None,
        send: Err(format!(
            "only {} requests reach the backend (nginx answers the others itself), and a \
             check sends only GET: such a request can change data behind the backend",
            methods.join(", ")
        )),
        file: d.file.clone(),
        line: d.line,
    })
}

/// Whether the location's `limit_except` (in `dirs`) answers `method` with 403 to every
/// client: the method is not one it names (GET names HEAD too), and its block denies all
/// with no `allow`.
fn denied(dirs: &[Directive], method: &str) -> bool {
    let Some(d) = dirs
        .iter()
        .find(|d| d.name == "limit_except" && d.block.is_some())
    else {
        return false;
    };
    let names = |m: &str| (d.args.iter()).any(|a| a.as_str().eq_ignore_ascii_case(m));
    let named = names(method) || (method.eq_ignore_ascii_case("HEAD") && names("GET"));
    !named && denies(d)
}

/// The first `*_pass` among `dirs` (inside `if` and `limit_except` too): its name and target.
pub fn pass_in(dirs: &[Directive]) -> Option<(&'static str, &str)> {
    dirs.iter().find_map(|d| match d.name.as_str() {
        n if PASS_DIRECTIVES.contains(&n) => PASS_DIRECTIVES
            .iter()
            .copied()
            .find(|p| *p == n)
            .map(|p| (p, d.arg0())),
        "if" | "limit_except" => pass_in(d.children()),
        _ => None,
    })
}

/// How a location is named across trees and checks: `/api/`, `= /auth`, `~ \.php$`.
pub fn location_key(modifier: Option<&str>, path: &str) -> String {
    match modifier {
        Some(m) => format!("{m} {path}"),
        None => path.to_string(),
    }
}

impl Location {
    /// As [`location_key`] names it.
    pub fn key(&self) -> String {
        location_key(self.modifier.as_deref(), &self.path)
    }
}

/// `location = /x`, `location =/x`, `location ~* \.php$`, `location @name`.
pub(crate) fn location_args(args: &[Word]) -> (Option<String>, String) {
    match args {
        [modifier, path, ..] => (Some(modifier.to_string()), path.to_string()),
        [one] => {
            for m in ["=", "^~", "~*", "~"] {
                if let Some(rest) = one.strip_prefix(m).filter(|r| !r.is_empty()) {
                    return (Some(m.to_string()), rest.to_string());
                }
            }
            (None, one.to_string())
        }
        [] => (None, String::new()),
    }
}
