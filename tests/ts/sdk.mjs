// The official `openai` SDK (pinned in package.json) driving `ossa serve`, for
// tests/serve_ts_sdk.rs: `node sdk.mjs BASE_URL MODE INPUT_JSON` prints a JSON result. Checks
// that need the SDK's own view (types, stream events) are made here; what the model said is
// compared by the Rust test.
import OpenAI from "openai";

const [base, mode, input] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: "unused", maxRetries: 0 });

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

// Every scenario through chat.completions.create, streamed and not.
async function chat(users) {
  const results = [];
  for (const user of users) {
    const messages = [{ role: "user", content: user }];
    const r = await client.chat.completions.create({ model: "gpt-oss", messages, temperature: 0 });
    const message = r.choices[0].message;
    check(message.reasoning === message.reasoning_content, `reasoning differs: ${JSON.stringify(r)}`);
    const stream = { content: "", reasoning: "", finish: null, chunks: 0 };
    const chunks = await client.chat.completions.create({
      model: "gpt-oss", messages, temperature: 0, stream: true,
    });
    for await (const chunk of chunks) {
      stream.chunks += 1;
      check(chunk.object === "chat.completion.chunk", `not a chunk: ${JSON.stringify(chunk)}`);
      if (!chunk.choices.length) continue;
      const delta = chunk.choices[0].delta;
      stream.content += delta.content ?? "";
      stream.reasoning += delta.reasoning_content ?? "";
      stream.finish = chunk.choices[0].finish_reason ?? stream.finish;
    }
    results.push({
      content: message.content,
      reasoning: message.reasoning_content ?? null,
      finish: r.choices[0].finish_reason,
      stream: { content: stream.content, reasoning: stream.reasoning, finish: stream.finish },
    });
  }
  return results;
}

// Every scenario through responses.stream: every output_item.added has its
// output_item.done (same id and index, a final status), and the completed response lists
// exactly the items that were done.
async function responses(users) {
  const tools = [{ type: "code_interpreter", container: { type: "auto" } }];
  const results = [];
  for (const user of users) {
    // The SDK's stream helper: it builds the response from the events itself (and throws on
    // an event for an item it was not told of).
    const events = client.responses.stream({ model: "gpt-oss", input: user, tools, temperature: 0 });
    const added = new Map();
    const done = new Map();
    let text = "";
    let last = null;
    let completed = null;
    let sequence = -1;
    for await (const event of events) {
      check(event.sequence_number === sequence + 1, `sequence ${event.sequence_number} after ${sequence}`);
      sequence = event.sequence_number;
      last = event.type;
      if (event.type === "response.output_item.added") {
        check(!added.has(event.output_index), `index ${event.output_index} added twice`);
        added.set(event.output_index, event.item.id);
      } else if (event.type === "response.output_item.done") {
        check(added.get(event.output_index) === event.item.id, `done without added: ${JSON.stringify(event)}`);
        check(!done.has(event.output_index), `index ${event.output_index} done twice`);
        check(["completed", "incomplete", "failed"].includes(event.item.status), `done ${JSON.stringify(event.item)}`);
        done.set(event.output_index, event.item);
      } else if (event.type === "response.output_text.delta") {
        text += event.delta;
      } else if (event.type === "response.completed" || event.type === "response.incomplete") {
        completed = event.response;
      }
    }
    check(completed !== null, "no response.completed");
    for (const [index, id] of added) {
      check(done.has(index), `item ${id} (${index}) added but never done`);
    }
    check(completed.output.length === done.size, `output ${completed.output.length} items, ${done.size} done`);
    completed.output.forEach((item, index) => {
      check(JSON.stringify(item) === JSON.stringify(done.get(index)), `item ${index} differs from its done`);
    });
    const built = await events.finalResponse();
    const summary = (output) => JSON.stringify(output.map((i) => [i.id, i.type, i.status]));
    check(summary(built.output) === summary(completed.output), "the SDK built other items");
    results.push({
      text,
      output_text: built.output_text,
      status: completed.status,
      kinds: completed.output.map((item) => item.type),
      last,
    });
  }
  return results;
}

const weather = {
  name: "get_weather",
  description: "Current weather in a city.",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

// A function-calling round trip in both APIs: the model is asked to call get_weather
// (`tool_choice`); a call it hands over must carry JSON arguments. The client then sends the
// call (the model's, or when it made none, the client's own: the tiny test model writes no JSON)
// with its output back, as the SDK's types shape them, and the model goes on from it.
async function functions({ user, output }) {
  const result = {};
  const chatTools = [{ type: "function", function: weather }];
  const first = await client.chat.completions.create({
    model: "gpt-oss", messages: [{ role: "user", content: user }], tools: chatTools,
    tool_choice: { type: "function", function: { name: "get_weather" } }, max_tokens: 64,
  });
  let message = first.choices[0].message;
  const made = message.tool_calls?.[0];
  result.chat_first = { finish: first.choices[0].finish_reason, made: Boolean(made) };
  if (made) {
    check(made.function.name === "get_weather", `called ${made.function.name}`);
    JSON.parse(made.function.arguments);
  } else {
    message = {
      role: "assistant", content: null,
      tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }],
    };
  }
  const call = message.tool_calls[0];
  const messages = [
    { role: "user", content: user }, message,
    { role: "tool", tool_call_id: call.id, content: output },
  ];
  const second = await client.chat.completions.create({
    model: "gpt-oss", messages, tools: chatTools, max_tokens: 256,
  });
  result.chat_second = { finish: second.choices[0].finish_reason };

  const tools = [{ type: "function", ...weather, strict: false }];
  const response = await client.responses.create({
    model: "gpt-oss", input: user, tools, tool_choice: { type: "function", name: "get_weather" },
    max_output_tokens: 64, store: true,
  });
  let item = response.output.find((i) => i.type === "function_call");
  result.responses_first = { status: response.status, made: Boolean(item) };
  if (item) {
    check(item.status === "completed", `call ${JSON.stringify(item)}`);
    JSON.parse(item.arguments);
  } else {
    check(response.output.every((i) => i.status !== "in_progress"), "an item left in progress");
    item = { type: "function_call", call_id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' };
  }
  const next = await client.responses.create({
    model: "gpt-oss", tools, max_output_tokens: 256, store: true,
    input: [{ role: "user", content: user }, item, { type: "function_call_output", call_id: item.call_id, output }],
  });
  const inputItems = [];
  for await (const listed of client.responses.inputItems.list(next.id, { order: "asc" })) {
    inputItems.push(listed.type ?? listed.role);
  }
  result.responses_second = { status: next.status, input_items: inputItems };
  return result;
}

const modes = { chat, responses, functions };
check(mode in modes, `unknown mode ${mode}`);
console.log(JSON.stringify(await modes[mode](JSON.parse(input))));
