//! Outbound proxies from `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (each also in lower case), decided
//! per URL in one place, so the Azure DevOps client, the Entra token requests and the Kubernetes client
//! agree on which hosts go through the proxy.
//!
//! Semantics follow curl (`man curl`, ENVIRONMENT; `lib/noproxy.c`):
//! - the lower-case variable wins over the upper-case one when both are set;
//! - `NO_PROXY` is a comma- (or space-) separated list; `*` alone matches every host;
//! - a name matches the host itself and every subdomain (`corp.example` and `.corp.example` both match
//!   `corp.example` and `dev.corp.example`), case-insensitively, a trailing dot ignored;
//! - an IP address matches itself, and a CIDR block (`10.0.0.0/8`, `fd00::/8`) every address in it;
//! - a port on an entry is ignored (curl does not match ports).
//!
//! kube-rs 5 reads `HTTPS_PROXY` itself but checks `NO_PROXY` against the proxy's own address rather
//! than the API server's (`kube-client/src/config/file_loader.rs`, `proxy_url`), and ignores `HTTP_PROXY`;
//! [`ProxyEnv::proxy_for`] is therefore applied to the cluster URL before the Kubernetes client is built.

use std::net::IpAddr;

use url::Url;

/// The proxy settings read from the environment once at start-up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyEnv {
    https: Option<Url>,
    http: Option<Url>,
    no_proxy: NoProxy,
}

/// Why the proxy environment cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProxyError {
    /// The message names the variable but not its value: a proxy URL may carry a password.
    #[error("{variable} is not a proxy URL such as http://proxy.corp:3128: fix or unset it")]
    InvalidProxyUrl { variable: &'static str },
}

impl ProxyEnv {
    /// From the process environment.
    pub fn from_env() -> Result<Self, ProxyError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProxyError> {
        let var = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|name| {
                lookup(name)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .map(|v| (name, v))
            })
        };
        let proxy = |lower, upper| -> Result<Option<Url>, ProxyError> {
            match var(lower, upper) {
                None => Ok(None),
                Some((variable, value)) => parse_proxy_url(&value)
                    .map(Some)
                    .ok_or(ProxyError::InvalidProxyUrl { variable }),
            }
        };
        Ok(Self {
            https: proxy("https_proxy", "HTTPS_PROXY")?,
            http: proxy("http_proxy", "HTTP_PROXY")?,
            no_proxy: var("no_proxy", "NO_PROXY")
                .map(|(_, v)| NoProxy::parse(&v))
                .unwrap_or_default(),
        })
    }

    /// No proxy at all (what `--no-proxy`-style tests and the defaults use).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any proxy is configured.
    pub fn is_empty(&self) -> bool {
        self.https.is_none() && self.http.is_none()
    }

    /// The proxy a request to `url` goes through, or `None` to connect directly.
    pub fn proxy_for(&self, url: &Url) -> Option<&Url> {
        let proxy = match url.scheme() {
            "https" | "wss" => self.https.as_ref(),
            "http" | "ws" => self.http.as_ref(),
            _ => None,
        }?;
        let host = url.host_str()?;
        (!self.no_proxy.matches(host)).then_some(proxy)
    }

    /// A reqwest proxy rule applying [`Self::proxy_for`]; install it on a builder that also calls
    /// `no_proxy()`, so reqwest's own reading of the environment does not apply a second set of rules.
    pub fn reqwest_proxy(&self) -> reqwest::Proxy {
        let env = self.clone();
        reqwest::Proxy::custom(move |url| env.proxy_for(url).cloned())
    }

    /// The proxy for the Kubernetes API server at `cluster_url` as an `http::Uri`, the form kube's
    /// `Config::proxy_url` takes.
    pub fn kube_proxy_for(&self, cluster_url: &http::Uri) -> Option<http::Uri> {
        let url = Url::parse(&cluster_url.to_string()).ok()?;
        self.proxy_for(&url)?.as_str().parse().ok()
    }

    /// Decide the Kubernetes client's proxy for its cluster URL. kube-rs has already put `HTTPS_PROXY`
    /// into `proxy_url` (or left it out when `NO_PROXY` matched the *proxy's* address); a `proxy-url` from
    /// the kubeconfig differs from that variable and is kept, as kubectl keeps it.
    pub fn apply_to_kube(
        &self,
        config: &mut kube::Config,
        lookup: impl Fn(&str) -> Option<String>,
    ) {
        let kube_env_proxy = ["HTTPS_PROXY", "https_proxy"]
            .into_iter()
            .find_map(|k| lookup(k).filter(|v| !v.trim().is_empty()))
            .and_then(|v| v.trim().parse::<http::Uri>().ok());
        let from_kubeconfig = config
            .proxy_url
            .as_ref()
            .is_some_and(|p| Some(p) != kube_env_proxy.as_ref());
        if !from_kubeconfig {
            config.proxy_url = self.kube_proxy_for(&config.cluster_url);
        }
    }

    /// Where the proxy is, for a start-up log line: scheme, host and port only, never credentials.
    pub fn describe(&self) -> String {
        let show = |u: &Option<Url>| match u {
            Some(u) => format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                u.port_or_known_default().unwrap_or(0)
            ),
            None => "none".to_string(),
        };
        format!(
            "https: {}, http: {}, no_proxy entries: {}",
            show(&self.https),
            show(&self.http),
            self.no_proxy.len()
        )
    }
}

/// How lockstep's own HTTP clients (Azure DevOps, Entra) reach the outside: the proxy rules and extra CA
/// certificates (an Azure DevOps Server or a TLS-inspecting proxy with a private CA).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outbound {
    pub proxy: ProxyEnv,
    /// PEM certificates trusted in addition to the system's roots.
    pub ca_bundle: Option<Vec<u8>>,
}

impl Outbound {
    /// The proxy from the environment and the CA bundle from `ca_file`, if given.
    pub fn from_env(ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let proxy = ProxyEnv::from_env().map_err(|e| e.to_string())?;
        let ca_bundle = match ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("could not read the CA bundle {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(Self { proxy, ca_bundle })
    }

    /// Apply the proxy rule (and no other: reqwest's own environment reading is switched off) and the
    /// extra roots to a reqwest builder.
    pub fn configure(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        let mut builder = builder.no_proxy();
        if !self.proxy.is_empty() {
            builder = builder.proxy(self.proxy.reqwest_proxy());
        }
        if let Some(pem) = &self.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the CA bundle is not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err("the CA bundle holds no PEM certificate".to_string());
            }
            builder = builder.tls_certs_merge(certs);
        }
        Ok(builder)
    }
}

/// A proxy URL as curl reads it: a bare `host:port` means `http://host:port`.
fn parse_proxy_url(value: &str) -> Option<Url> {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&with_scheme).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some()).then_some(url)
}

/// The parsed `NO_PROXY` list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    /// Lower case, without leading or trailing dots.
    Domain(String),
    Ip(IpAddr),
    Cidr(IpAddr, u8),
}

impl NoProxy {
    pub fn parse(value: &str) -> Self {
        let mut out = Self::default();
        for raw in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            if raw == "*" {
                out.all = true;
                continue;
            }
            if let Some(entry) = parse_entry(raw) {
                out.entries.push(entry);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len() + usize::from(self.all)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `host` (a name, an IPv4 address or a bracketed or bare IPv6 address) bypasses the proxy.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| match (entry, ip) {
            (Entry::Ip(e), Some(ip)) => *e == ip,
            (Entry::Cidr(net, bits), Some(ip)) => in_cidr(ip, *net, *bits),
            (Entry::Domain(d), None) => {
                host == *d
                    || (host.len() > d.len()
                        && host.ends_with(d.as_str())
                        && host.as_bytes()[host.len() - d.len() - 1] == b'.')
            }
            // A name entry never matches an address and vice versa, as in curl.
            _ => false,
        })
    }
}

fn parse_entry(raw: &str) -> Option<Entry> {
    if let Some((addr, bits)) = raw.split_once('/') {
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = addr.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        return (bits <= max).then_some(Entry::Cidr(ip, bits));
    }
    // `[::1]:8080`, `[::1]`, `::1`, `10.0.0.1:443`, `host:443`.
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if raw.parse::<IpAddr>().is_ok() {
        raw
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Entry::Ip(ip));
    }
    let name = host
        .trim_start_matches('*')
        .trim_matches('.')
        .to_ascii_lowercase();
    (!name.is_empty()).then_some(Entry::Domain(name))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        // An IPv4-mapped IPv6 address against an IPv4 block: compare as IPv4.
        (IpAddr::V6(ip), IpAddr::V4(_)) => ip
            .to_ipv4_mapped()
            .is_some_and(|v4| in_cidr(IpAddr::V4(v4), net, bits)),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    fn via(env: &ProxyEnv, url: &str) -> Option<String> {
        env.proxy_for(&Url::parse(url).unwrap())
            .map(|u| u.to_string())
    }

    #[test]
    fn scheme_picks_the_variable_and_lower_case_wins() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("HTTP_PROXY", "plain:8080"),
        ]);
        assert_eq!(
            via(&e, "https://dev.azure.com/x").as_deref(),
            Some("http://lower:3128/")
        );
        assert_eq!(
            via(&e, "http://tfs.corp/x").as_deref(),
            Some("http://plain:8080/")
        );
        let only_upper = env(&[("HTTPS_PROXY", "http://upper:3128")]);
        assert_eq!(
            via(&only_upper, "https://a").as_deref(),
            Some("http://upper:3128/")
        );
        assert_eq!(via(&only_upper, "http://a"), None);
        assert!(env(&[]).is_empty());
        assert_eq!(via(&env(&[]), "https://a"), None);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let e = env(&[("https_proxy", " "), ("HTTPS_PROXY", "http://p:1")]);
        assert_eq!(via(&e, "https://a").as_deref(), Some("http://p:1/"));
    }

    #[test]
    fn a_bad_proxy_url_names_the_variable_not_the_value() {
        let err = ProxyEnv::from_lookup(|k| {
            (k == "HTTPS_PROXY").then(|| "ftp://user:s3cret@x".to_string())
        })
        .unwrap_err();
        assert_eq!(
            err,
            ProxyError::InvalidProxyUrl {
                variable: "HTTPS_PROXY"
            }
        );
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn no_proxy_domains_match_themselves_and_subdomains_only() {
        let n = NoProxy::parse("corp.example, .svc.cluster.local,Kubernetes.Default ,*.wild.test");
        for host in [
            "corp.example",
            "dev.corp.example",
            "CORP.EXAMPLE.",
            "api.svc.cluster.local",
            "svc.cluster.local",
            "kubernetes.default",
            "a.wild.test",
        ] {
            assert!(n.matches(host), "{host} should bypass");
        }
        for host in [
            "notcorp.example",
            "corp.example.com",
            "example",
            "10.0.0.1",
            "kubernetes",
        ] {
            assert!(!n.matches(host), "{host} should use the proxy");
        }
    }

    #[test]
    fn no_proxy_addresses_and_cidr_blocks() {
        let n = NoProxy::parse("10.0.0.0/8 192.168.1.7,::1,fd00::/8,[fe80::1]:8443,127.0.0.1:6443");
        for host in [
            "10.1.2.3",
            "192.168.1.7",
            "::1",
            "[::1]",
            "fd12::5",
            "fe80::1",
            "127.0.0.1",
            "::ffff:10.9.9.9",
        ] {
            assert!(n.matches(host), "{host} should bypass");
        }
        for host in ["11.0.0.1", "192.168.1.8", "fe00::1", "10.example"] {
            assert!(!n.matches(host), "{host} should use the proxy");
        }
        // A name never matches an address entry.
        assert!(!NoProxy::parse("127.0.0.1").matches("localhost"));
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8"));
        assert!(NoProxy::parse("1.2.3.4/32").matches("1.2.3.4"));
        assert!(!NoProxy::parse("1.2.3.4/33").matches("1.2.3.4"));
    }

    #[test]
    fn a_lone_star_bypasses_everything() {
        let e = env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "*")]);
        assert_eq!(via(&e, "https://dev.azure.com"), None);
        // `*` inside a list is not a wildcard for everything, as in curl.
        assert!(!NoProxy::parse("*.x, a").matches("b"));
    }

    #[test]
    fn no_proxy_applies_per_url_and_lower_case_wins() {
        let e = env(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("HTTP_PROXY", "http://p:1"),
            ("no_proxy", "127.0.0.1,.cluster.local"),
            ("NO_PROXY", "dev.azure.com"),
        ]);
        assert_eq!(
            via(&e, "https://dev.azure.com/x").as_deref(),
            Some("http://p:1/")
        );
        assert_eq!(via(&e, "https://127.0.0.1:6443/api"), None);
        assert_eq!(via(&e, "http://kubernetes.default.svc.cluster.local"), None);
        let kube = e.kube_proxy_for(&"https://10.0.0.1:443".parse().unwrap());
        assert_eq!(kube.map(|u| u.to_string()).as_deref(), Some("http://p:1/"));
        assert_eq!(
            e.kube_proxy_for(&"https://127.0.0.1:6443".parse().unwrap()),
            None
        );
    }

    #[test]
    fn the_kubernetes_client_gets_the_per_url_decision_unless_the_kubeconfig_names_a_proxy() {
        let vars = [
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("NO_PROXY", "10.0.0.0/8,.cluster.local"),
        ];
        let e = env(&vars);
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let config_for = |cluster: &str, proxy: Option<&str>| {
            let mut c = kube::Config::new(cluster.parse().unwrap());
            c.proxy_url = proxy.map(|p| p.parse().unwrap());
            c
        };
        // kube-rs put HTTPS_PROXY in although NO_PROXY covers the API server: dropped.
        let mut inside = config_for("https://10.0.0.1:443", Some("http://proxy.corp:3128"));
        e.apply_to_kube(&mut inside, lookup);
        assert_eq!(inside.proxy_url, None);
        // In-cluster config never reads the proxy variables: added for an API server outside NO_PROXY.
        let mut outside = config_for("https://aks-dns.hcp.westeurope.azmk8s.io:443", None);
        e.apply_to_kube(&mut outside, lookup);
        assert_eq!(
            outside.proxy_url.map(|u| u.to_string()).as_deref(),
            Some("http://proxy.corp:3128/")
        );
        // A kubeconfig proxy-url is the user's explicit choice.
        let mut explicit = config_for("https://10.0.0.1:443", Some("http://other:8080"));
        e.apply_to_kube(&mut explicit, lookup);
        assert_eq!(
            explicit.proxy_url.map(|u| u.to_string()).as_deref(),
            Some("http://other:8080/")
        );
    }

    #[test]
    fn describe_leaves_out_credentials() {
        let e = env(&[("HTTPS_PROXY", "http://user:s3cret@proxy.corp:3128")]);
        let text = e.describe();
        assert!(text.contains("proxy.corp:3128"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains("user"), "{text}");
    }
}
