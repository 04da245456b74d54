//! A proxied site with a baseline, and a change applied while a client loops through it: the
//! shape of every "refused before the reload, and no client saw it" test (protocol probes and
//! the shadow nginx alike).

use super::*;

/// A running nginx whose `site.test` on its own loopback address proxies `/` to an upstream,
/// with `safe-reload init` done.
pub struct ProxiedSite {
    pub nginx: TestNginx,
    pub sr: SafeReload,
    pub listen: SocketAddr,
    /// What `/` proxies to (`IP:PORT`).
    pub upstream: String,
}

/// What one run did while a client looped through the site.
pub struct ClientRun {
    pub run: Run,
    /// The client's answers that were not 200.
    pub not_200: Vec<Result<u16, String>>,
    /// How many requests the client made.
    pub requests: usize,
}

impl ProxiedSite {
    /// Start the site proxying `/` to `upstream` (`IP:PORT`) on a fresh loopback address.
    pub fn start(upstream: &str) -> ProxiedSite {
        let ip = unique_loopback();
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&proxy_site(listen, upstream));
        let sr = SafeReload::new(&nginx);
        sr.init();
        ProxiedSite {
            nginx,
            sr,
            listen,
            upstream: upstream.to_string(),
        }
    }

    /// Change the configuration so `/` proxies to `upstream` instead.
    pub fn point_at(&self, upstream: &str) {
        self.nginx.write_http(&proxy_site(self.listen, upstream));
    }

    /// Change the configuration by adding `location /new { DIRECTIVE; }`, `/` unchanged.
    pub fn add_location(&self, directive: &str) {
        let site = proxy_site(self.listen, &self.upstream);
        let body = site.trim_end().strip_suffix('}').unwrap_or(&site);
        self.nginx
            .write_http(&format!("{body} location /new {{ {directive}; }} }}"));
    }

    /// Assert what `GET /` answers now.
    pub fn serves(&self, body: &str) {
        let got = http_get(self.listen, "site.test", "/").expect("the site answers");
        assert_eq!(got, (200, body.to_string()), "what the site serves");
    }

    /// Run `safe-reload ARGS` while a client loops through `/`.
    pub fn run_with_clients(&self, args: &[&str]) -> ClientRun {
        let clients = ClientLoop::start(self.listen, "site.test", "/");
        let run = self.sr.run(args);
        let answers = clients.finish();
        let requests = answers.len();
        let not_200 = answers.into_iter().filter(|a| *a != Ok(200)).collect();
        ClientRun {
            run,
            not_200,
            requests,
        }
    }

    /// Run `safe-reload -y --json` while a client loops: refused before the reload (exit 1, no
    /// reload in the report), the same workers, not one client request answered other than
    /// 200, and `/` still serving `body`. Returns the run.
    pub fn refused_before_reload(&self, body: &str) -> Run {
        let workers = self.nginx.worker_pids();
        let c = self.run_with_clients(&["-y", "--json"]);
        let run = c.run;
        run.expect(1);
        assert_eq!(run.outcome(), "refused", "{run}");
        assert!(
            run.json()["reload"].is_null(),
            "nginx must not be signalled: {run}"
        );
        assert_eq!(
            self.nginx.worker_pids(),
            workers,
            "the real nginx's workers are unchanged"
        );
        assert!(c.requests > 0, "the client loop made no request");
        assert!(
            c.not_200.is_empty(),
            "{} of {} client requests were not 200: {:?}",
            c.not_200.len(),
            c.requests,
            c.not_200
        );
        self.serves(body);
        run
    }
}

/// The `--json` report's probe result for `target`.
pub fn probe_result(run: &Run, target: SocketAddr) -> serde_json::Value {
    run.json()["probe"]["results"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["target"] == target.to_string())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no probe result for {target}:\n{run}"))
}
