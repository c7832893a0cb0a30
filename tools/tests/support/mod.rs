//! Test support: the recorded browser cases, a small HTTP/1.1 server on loopback, and the cost
//! of inlining nested schema definitions.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How many levels of the nested definitions in `defs` (named `{prefix}{level}`, from level
/// `first`) the model is shown within [`ossa_tools::schema::MAX_INLINED_BYTES`], of 0..=`most`.
/// Inlining level `i` costs its definition's JSON size 2^i times (each level uses the one below
/// twice). The budget must cut in between (past 3 levels, before `most`).
pub fn levels_within_the_inlining_budget(
    defs: &Value,
    prefix: &str,
    first: usize,
    most: usize,
) -> usize {
    let definition_size = |level: usize| {
        serde_json::to_string(&defs[format!("{prefix}{level}")])
            .expect("serializes")
            .len()
    };
    let cost = |depth: usize| -> usize {
        (first..first + depth)
            .map(|level| (1 << level) * definition_size(level))
            .sum()
    };
    let depth = (0..=most)
        .take_while(|&depth| cost(depth) <= ossa_tools::schema::MAX_INLINED_BYTES)
        .last()
        .expect("depth 0 costs nothing");
    assert!(
        depth > 3 && depth < most,
        "the budget cuts in between: {depth}"
    );
    depth
}

/// The repository's recorded browser sessions.
pub fn fixture_dir() -> PathBuf {
    ossa_test_support::fixtures().join("browser")
}

/// Case files (JSON objects with `steps`) in `dir`, sorted by name.
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v.get("steps").is_some())
        })
        .collect();
    files.sort();
    files
}

/// The repository's cases plus those in the folder named by `OSSA_BROWSER_CASES`, if set.
pub fn all_case_files() -> Vec<PathBuf> {
    let mut files = case_files(&fixture_dir());
    if let Ok(extra) = std::env::var("OSSA_BROWSER_CASES")
        && !extra.trim().is_empty()
    {
        let extra = case_files(Path::new(extra.trim()));
        eprintln!("OSSA_BROWSER_CASES: {} more case(s)", extra.len());
        files.extend(extra);
    }
    files
}

pub fn load_json(path: &Path) -> Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A recorded `PageContents` (`{text, title, urls: {id: url}}`) as the crate's type.
pub fn page_from_fixture(url: &str, value: &Value) -> ossa_tools::browser::PageContents {
    let urls_map = value["urls"].as_object().cloned().unwrap_or_default();
    let mut urls = vec![String::new(); urls_map.len()];
    for (id, target) in &urls_map {
        let i: usize = id
            .parse()
            .unwrap_or_else(|_| panic!("link id {id} is not an index"));
        urls[i] = target.as_str().unwrap_or_default().to_string();
    }
    ossa_tools::browser::PageContents {
        url: url.to_string(),
        title: value["title"].as_str().unwrap_or_default().to_string(),
        text: value["text"].as_str().unwrap_or_default().to_string(),
        urls,
        snippets: None,
    }
}

/// An HTTP request as the test server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter, form-decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| form_decode(v))
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A call of the browser tool as the model writes it (on the analysis channel).
pub fn call(recipient: &str, args: &str) -> ossa_tools::tool::ToolCall {
    ossa_tools::tool::ToolCall {
        recipient: recipient.into(),
        channel: Some("analysis".into()),
        content_type: None,
        content: args.into(),
    }
}

pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the server answers.
pub enum Reply {
    /// A complete response (`Content-Length` set).
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked body that never ends (stops after `max_chunks`, or when the client leaves).
    Endless {
        content_type: String,
        chunk: Vec<u8>,
        max_chunks: usize,
    },
    /// Headers, then one byte every `interval`, `count` times.
    Drip {
        content_type: String,
        interval: Duration,
        count: usize,
    },
    /// Accepts the connection and says nothing for `for`.
    Silent { r#for: Duration },
}

impl Reply {
    pub fn html(body: &str) -> Self {
        Self::ok("text/html; charset=utf-8", body.as_bytes().to_vec())
    }

    pub fn json(value: &Value) -> Self {
        Self::ok("application/json", value.to_string().into_bytes())
    }

    pub fn ok(content_type: &str, body: Vec<u8>) -> Self {
        Self::Full {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    pub fn status(status: u16, body: &str) -> Self {
        Self::Full {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn redirect(location: &str) -> Self {
        Self::Full {
            status: 302,
            headers: vec![("Location".into(), location.into())],
            body: Vec::new(),
        }
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// An HTTP/1.1 server on 127.0.0.1 (one request per connection), recording requests.
pub struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", handler)
            .await
            .expect("bind loopback")
    }

    /// A server on `addr` (another loopback address, a given port), or why it cannot bind.
    pub async fn start_on(
        addr: &str,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, handler, recorded).await;
                });
            }
        });
        Ok(Self {
            addr,
            requests,
            task,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 1 << 20 {
            return Ok(None);
        }
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A `200 OK` head for a body of `content_type` whose end `framing` (a header) says.
async fn write_ok_head(
    stream: &mut TcpStream,
    content_type: &str,
    framing: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await
}

async fn serve(
    mut stream: TcpStream,
    handler: Handler,
    recorded: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let reply = handler(&request);
    if let Ok(mut r) = recorded.lock() {
        r.push(request);
    }
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason(status),
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Reply::Endless {
            content_type,
            chunk,
            max_chunks,
        } => {
            write_ok_head(&mut stream, &content_type, "Transfer-Encoding: chunked").await?;
            for _ in 0..max_chunks {
                stream
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                stream.write_all(&chunk).await?;
                stream.write_all(b"\r\n").await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Reply::Drip {
            content_type,
            interval,
            count,
        } => {
            write_ok_head(
                &mut stream,
                &content_type,
                &format!("Content-Length: {count}"),
            )
            .await?;
            for _ in 0..count {
                tokio::time::sleep(interval).await;
                stream.write_all(b"x").await?;
                stream.flush().await?;
            }
        }
        Reply::Silent { r#for } => {
            tokio::time::sleep(r#for).await;
        }
    }
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}
