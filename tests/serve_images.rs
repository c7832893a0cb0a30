//! A figure the python tool draws reaches a Responses client as an image output, as OpenAI's
//! code interpreter returns it: the real binary drives a scripted model
//! (`--backend openai-completions`) whose python call runs matplotlib in the real sandbox and
//! saves a PNG, and writes a file named like an image that is not one. The client gets the
//! figure as a `data:image/png;base64,…` URL (the real PNG: its size is matplotlib's default
//! 640×480) and never the impostor.

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::scripted::{MODEL, ScriptedServer};

const PLOT: &str = "import matplotlib\n\
                    matplotlib.use('Agg')\n\
                    import matplotlib.pyplot as plt\n\
                    plt.plot([1, 2, 3], [1, 4, 9])\n\
                    plt.savefig('/mnt/data/plot.png')\n\
                    open('/mnt/data/fake.png', 'w').write('<script>alert(1)</script>')\n\
                    print('saved')";

fn script(model: &ScriptedServer) {
    model.script_python_then_answer(PLOT, "Here is the plot.");
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    (word(16), word(20))
}

fn code_call(response: &Value) -> Value {
    response["output"]
        .as_array()
        .expect("output")
        .iter()
        .find(|item| item["type"] == "code_interpreter_call")
        .unwrap_or_else(|| panic!("a code call: {response}"))
        .clone()
}

fn check_outputs(case: &str, call: &Value) {
    assert_eq!(call["status"], "completed", "{case}: {call}");
    let outputs = call["outputs"].as_array().expect("outputs");
    assert_eq!(outputs[0]["type"], "logs", "{case}: {call}");
    assert!(
        outputs[0]["logs"]
            .as_str()
            .unwrap_or_default()
            .contains("saved"),
        "{case}: {call}"
    );
    let images: Vec<&Value> = outputs.iter().filter(|o| o["type"] == "image").collect();
    assert_eq!(
        images.len(),
        1,
        "{case}: the figure and not the impostor: {call}"
    );
    let url = images[0]["url"].as_str().expect("url");
    let data = url
        .strip_prefix("data:image/png;base64,")
        .unwrap_or_else(|| panic!("{case}: a PNG data URL: {}", &url[..url.len().min(60)]));
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    assert_eq!(png_size(&png), (640, 480), "{case}");
}

#[test]
fn figures_reach_responses_clients_as_images() {
    let model = ScriptedServer::start();
    let server = model.serve(&["--python", "--temperature", "0"], None);
    let endpoint = format!("{}/responses", server.base);
    let tools = json!([{"type": "code_interpreter", "container": {"type": "auto"}}]);

    script(&model);
    let body = json!({"model": MODEL, "input": "Plot the squares.", "tools": tools,
                      "store": false});
    let response: Value = ureq::post(&endpoint)
        .send_json(body)
        .expect("response")
        .into_json()
        .expect("JSON");
    check_outputs("not streamed", &code_call(&response));

    script(&model);
    let body = json!({"model": MODEL, "input": "Plot the squares.", "tools": tools,
                      "store": false, "stream": true});
    let text = ureq::post(&endpoint)
        .send_json(body)
        .expect("response")
        .into_string()
        .expect("body");
    let done: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str::<Value>(d.trim()).expect("event JSON"))
        .filter(|e| e["type"] == "response.output_item.done")
        .map(|e| e["item"].clone())
        .filter(|item| item["type"] == "code_interpreter_call")
        .collect();
    assert_eq!(done.len(), 1, "{text}");
    check_outputs("streamed", &done[0]);
}
