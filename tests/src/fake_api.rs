//! A stand-in for the Kubernetes API server, for the `--kubernetes` tests: no real API
//! server runs where the suite runs, so this one serves a recorded pod list on 127.0.0.1
//! and holds the watch that follows it open, as an API server with no pod changes would.
//!
//! It answers `GET /api/v1/pods?...` (list, or watch with `watch=true`), and the reviews
//! `sockerr daemon --expose-api` asks for: `POST .../tokenreviews` (the tokens of a
//! [`FakeAccess`]) and `POST .../subjectaccessreviews` (its grants, as RBAC would decide
//! them for a non-resource URL). It records every request line and review body, and stops
//! (closing held watches) when dropped. Connections are bounded in number and every read
//! and hold in time.
//!
//! [`FakeApiServer::set_down`] plays an outage: held watches break off mid-stream and new
//! connections are closed before any answer, as when an API server restarts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAX_CONNECTIONS: usize = 512;
const MAX_REQUEST_HEAD: usize = 64 * 1024;
const MAX_REQUEST_BODY: usize = 64 * 1024;
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A watch is held at most this long (tests last seconds).
const MAX_WATCH_HOLD: Duration = Duration::from_secs(120);

pub struct FakeApiServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    reviews: Arc<Mutex<Vec<serde_json::Value>>>,
    acceptor: Option<JoinHandle<()>>,
}

/// Who the stand-in knows and what RBAC would allow them.
#[derive(Debug, Clone, Default)]
pub struct FakeAccess {
    /// token -> (username, groups)
    pub tokens: Vec<(String, String, Vec<String>)>,
    /// (user or group, verb, non-resource path) that a ClusterRoleBinding grants
    pub grants: Vec<(String, String, String)>,
}

/// What one connection's handler shares with the server.
struct Shared {
    pod_list: String,
    access: FakeAccess,
    requests: Arc<Mutex<Vec<String>>>,
    reviews: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
}

impl FakeApiServer {
    /// Serves `pod_list` (a `v1.PodList` as JSON) to list requests; knows no token.
    pub fn start(pod_list: String) -> Self {
        Self::start_with_access(pod_list, FakeAccess::default())
    }

    /// Also reviews the tokens and grants of `access`.
    pub fn start_with_access(pod_list: String, access: FakeAccess) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("bound address");
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            pod_list,
            access,
            requests: Arc::clone(&requests),
            reviews: Arc::clone(&reviews),
            stop: Arc::clone(&stop),
            down: Arc::clone(&down),
        });
        let acceptor = {
            let (stop, down) = (Arc::clone(&stop), Arc::clone(&down));
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                for stream in listener.incoming().take(MAX_CONNECTIONS) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if down.load(Ordering::SeqCst) {
                        // Closed before any answer: the client's request fails.
                        continue;
                    }
                    let shared = Arc::clone(&shared);
                    handlers.push(std::thread::spawn(move || {
                        let _ = serve(stream, &shared);
                    }));
                }
                for handler in handlers {
                    let _ = handler.join();
                }
            })
        };
        Self { address, stop, down, requests, reviews, acceptor: Some(acceptor) }
    }

    /// Starts (`true`) or ends an outage.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Request lines (`GET /api/v1/pods?... HTTP/1.1`) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bodies of the TokenReviews and SubjectAccessReviews received so far, in order.
    pub fn reviews(&self) -> Vec<serde_json::Value> {
        self.reviews.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes a kubeconfig for this server into `dir`; returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        write_kubeconfig(dir, &self.url())
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A kubeconfig pointing at `server` (plain HTTP, no credentials).
pub fn write_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
         current-context: test\nusers:\n- name: test\n  user: {{}}\n"
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut received = read_head(&mut stream)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(&received).map_err(std::io::Error::other)?;
    let httparse::Status::Complete(head_len) = parsed else {
        return Err(std::io::Error::other("incomplete request head"));
    };
    let (method, path) = (request.method.unwrap_or("").to_owned(), request.path.unwrap_or("").to_owned());
    let content_length = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    shared.requests.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{method} {path}"));
    let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
    if method == "POST" && (route == TOKEN_REVIEWS || route == ACCESS_REVIEWS) {
        if content_length > MAX_REQUEST_BODY {
            return Err(std::io::Error::other("review body too large"));
        }
        let mut body = received.split_off(head_len);
        while body.len() < content_length {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed before the body ended"));
            }
            body.extend_from_slice(&buf[..n]);
        }
        let review: serde_json::Value =
            serde_json::from_slice(&body[..content_length]).map_err(std::io::Error::other)?;
        shared.reviews.lock().unwrap_or_else(|p| p.into_inner()).push(review.clone());
        let answer = if route == TOKEN_REVIEWS {
            token_review(&shared.access, review)
        } else {
            access_review(&shared.access, review)
        };
        return respond(&mut stream, "201 Created", &answer.to_string());
    }
    if method != "GET" || route != "/api/v1/pods" {
        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;
        return respond(&mut stream, "404 Not Found", body);
    }
    if query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1") {
        // Headers now, events never: the pods do not change during a test.
        stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        )?;
        stream.flush()?;
        let held = Instant::now();
        while !shared.stop.load(Ordering::SeqCst) && held.elapsed() < MAX_WATCH_HOLD {
            if shared.down.load(Ordering::SeqCst) {
                // Broken off without the last chunk, as a crashing server leaves it.
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        return stream.write_all(b"0\r\n\r\n");
    }
    respond(&mut stream, "200 OK", &shared.pod_list)
}

/// The TokenReview with its status: the user of a known token, else not authenticated.
fn token_review(access: &FakeAccess, mut review: serde_json::Value) -> serde_json::Value {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let known = access.tokens.iter().find(|(t, _, _)| t == token);
    review["status"] = match known {
        Some((_, user, groups)) => serde_json::json!({
            "authenticated": true,
            "user": {"username": user, "uid": format!("uid-{user}"), "groups": groups},
        }),
        None => serde_json::json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    review
}

/// The SubjectAccessReview with its status: allowed when a grant names the user or one of
/// its groups, the verb and the non-resource path.
fn access_review(access: &FakeAccess, mut review: serde_json::Value) -> serde_json::Value {
    let spec = &review["spec"];
    let user = spec["user"].as_str().unwrap_or_default();
    let groups: Vec<&str> =
        spec["groups"].as_array().map(|g| g.iter().filter_map(|g| g.as_str()).collect()).unwrap_or_default();
    let attributes = &spec["nonResourceAttributes"];
    let (verb, path) =
        (attributes["verb"].as_str().unwrap_or_default(), attributes["path"].as_str().unwrap_or_default());
    let allowed = access
        .grants
        .iter()
        .any(|(who, v, p)| (who == user || groups.contains(&who.as_str())) && v == verb && p == path);
    review["status"] = if allowed {
        serde_json::json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding"})
    } else {
        serde_json::json!({"allowed": false, "reason": ""})
    };
    review
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before the request head ended"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(server: &FakeApiServer, path: &str) -> String {
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn serves_the_list_and_records_requests() {
        let server = FakeApiServer::start(r#"{"kind":"PodList","items":[]}"#.into());
        let list = get(&server, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a");
        assert!(list.starts_with("HTTP/1.1 200 OK") && list.ends_with(r#"{"kind":"PodList","items":[]}"#));
        assert!(get(&server, "/api/v1/namespaces").starts_with("HTTP/1.1 404"));
        assert_eq!(
            server.requests(),
            ["GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a", "GET /api/v1/namespaces"]
        );
    }

    fn post(server: &FakeApiServer, path: &str, body: &str) -> serde_json::Value {
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(stream, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 201"), "{response}");
        serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
    }

    #[test]
    fn reviews_tokens_and_grants_like_the_api_server() {
        let access = FakeAccess {
            tokens: vec![(
                "t-reader".into(),
                "system:serviceaccount:monitoring:reader".into(),
                vec!["readers".into()],
            )],
            grants: vec![("readers".into(), "get".into(), "/v1/sockets".into())],
        };
        let server = FakeApiServer::start_with_access("{}".into(), access);
        let known = post(&server, TOKEN_REVIEWS, r#"{"spec":{"token":"t-reader"}}"#);
        assert_eq!(known["status"]["authenticated"], true);
        assert_eq!(known["status"]["user"]["username"], "system:serviceaccount:monitoring:reader");
        let unknown = post(&server, TOKEN_REVIEWS, r#"{"spec":{"token":"forged"}}"#);
        assert_eq!(unknown["status"]["authenticated"], false);
        let sar = |groups: &str, path: &str| {
            let body = format!(
                r#"{{"spec":{{"user":"u","groups":{groups},"nonResourceAttributes":{{"path":"{path}","verb":"get"}}}}}}"#
            );
            post(&server, ACCESS_REVIEWS, &body)["status"]["allowed"].clone()
        };
        assert_eq!(sar(r#"["readers"]"#, "/v1/sockets"), true);
        assert_eq!(sar(r#"["others"]"#, "/v1/sockets"), false);
        assert_eq!(sar(r#"["readers"]"#, "/v1/other"), false);
        assert_eq!(server.reviews().len(), 5);
    }

    #[test]
    fn an_outage_breaks_held_watches_and_refuses_answers() {
        let server = FakeApiServer::start("{}".into());
        let mut watch = TcpStream::connect(server.address).unwrap();
        watch.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(watch, "GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = [0u8; 15];
        watch.read_exact(&mut head).unwrap();
        server.set_down(true);
        let mut rest = String::new();
        watch.read_to_string(&mut rest).unwrap();
        assert!(!rest.ends_with("0\r\n\r\n"), "broken off, not ended: {rest:?}");
        // Closed unanswered: EOF or a reset, depending on whether the request had arrived.
        let mut refused = TcpStream::connect(server.address).unwrap();
        refused.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(refused, "GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = String::new();
        let _ = refused.read_to_string(&mut answer);
        assert_eq!(answer, "", "no answer while down");
        server.set_down(false);
        assert!(get(&server, "/api/v1/pods").starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn held_watch_ends_when_the_server_stops() {
        let server = FakeApiServer::start("{}".into());
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = [0u8; 15];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200 OK");
        drop(server);
        let mut rest = String::new();
        stream.read_to_string(&mut rest).unwrap();
        assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
    }
}
