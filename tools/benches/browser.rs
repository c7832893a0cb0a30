//! What a page costs the browser: wrapping its text into 80-column lines, and a session that
//! opens it and reads it view by view. The hostile inputs are the shapes that made wrapping
//! quadratic: a megabyte without a space (one long "word") and a megabyte of spaces; and a page
//! of a million empty lines.

use std::sync::Arc;

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ossa_tools::ToolCall;
use ossa_tools::browser::{
    BrowserBackend, BrowserBackendError, BrowserConfig, BrowserTool, PageContents, wrap_lines,
};

const MIB: usize = 1024 * 1024;

fn prose(bytes: usize) -> String {
    let paragraph = "The browser numbers a page's lines as the reference does, so that a citation such \
as L12-L15 points at the same words for the model and for the reader. Each paragraph is one \
long line, wrapped at eighty columns with its whitespace kept.\n\n";
    paragraph.repeat(bytes / paragraph.len() + 1)[..bytes].to_string()
}

fn inputs() -> Vec<(&'static str, String)> {
    vec![
        ("prose_1MiB", prose(MIB)),
        ("no_spaces_256KiB", "a".repeat(MIB / 4)),
        ("no_spaces_1MiB", "a".repeat(MIB)),
        ("spaces_1MiB", format!("a{}b", " ".repeat(MIB))),
        ("newlines_1MiB", "\n".repeat(MIB)),
    ]
}

fn wrap(c: &mut Criterion) {
    let mut group = c.benchmark_group("wrap_lines");
    group.sample_size(10);
    for (name, text) in inputs() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| wrap_lines(text, 80))
        });
    }
    group.finish();
}

/// One page, served from memory.
struct OnePage(PageContents);

#[async_trait]
impl BrowserBackend for OnePage {
    async fn search(
        &self,
        _query: &str,
        _topn: usize,
    ) -> Result<PageContents, BrowserBackendError> {
        Err(BrowserBackendError::new("no search here"))
    }

    async fn fetch(&self, _url: &str) -> Result<PageContents, BrowserBackendError> {
        Ok(self.0.clone())
    }
}

fn call(recipient: &str, args: &str) -> ToolCall {
    ToolCall {
        recipient: recipient.into(),
        channel: Some("analysis".into()),
        content_type: None,
        content: args.into(),
    }
}

/// Opens the page, then reads four more views of it further down, and runs one `find`.
fn session(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("open_and_read_5_views");
    group.sample_size(10);
    for (name, text) in inputs() {
        let page = PageContents {
            url: "https://example.org/page".into(),
            title: "A page".into(),
            text,
            urls: Vec::new(),
            snippets: None,
        };
        let tool = BrowserTool::new(Arc::new(OnePage(page)), BrowserConfig::default());
        tool.warm_up();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut session = tool.session();
                    let opened = session
                        .handle(&call(
                            "browser.open",
                            r#"{"id": "https://example.org/page"}"#,
                        ))
                        .await;
                    assert!(
                        opened.content.contains("**viewing lines"),
                        "{}",
                        opened.content
                    );
                    for loc in [100, 1000, 2000, 3000] {
                        let args = format!(r#"{{"cursor": 0, "loc": {loc}}}"#);
                        session.handle(&call("browser.open", &args)).await;
                    }
                    session
                        .handle(&call(
                            "browser.find",
                            r#"{"pattern": "citation", "cursor": 0}"#,
                        ))
                        .await
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, wrap, session);
criterion_main!(benches);
