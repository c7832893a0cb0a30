"""The official `openai` Python SDK against `ossa serve`: a streamed chat, then a Responses call
where the model runs Python in ossa's sandbox (OpenAI's code interpreter tool) and a function
call answered by this program.

    ossa serve --python &            # http://127.0.0.1:8080/v1 by default
    pip install openai
    python examples/openai_client.py [BASE_URL]

`ossa serve` answers only its owner: with `--api-key KEY` (or OSSA_API_KEY), set
OPENAI_API_KEY=KEY here; without one it listens on loopback only and any key is accepted.
"""

import json
import os
import sys

from openai import OpenAI

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "local"))
model = client.models.list().data[0].id
print(f"model: {model}")

# 1. Chat Completions, streamed: the answer as it is written; the reasoning arrives in
#    `reasoning` (and `reasoning_content`) deltas.
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello in one word."}],
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()

# 2. Responses with the code interpreter: the model's Python runs in ossa's sandbox.
response = client.responses.create(
    model=model,
    input="What is the sum of the squares of the integers from 1 to 22? Use python.",
    tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
)
for item in response.output:
    if item.type == "code_interpreter_call":
        print(f"python ran: {item.code!r}")
print(response.output_text)

# 3. A function the client runs: the model asks, this program answers, the model goes on.
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Gets the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
response = client.responses.create(
    model=model, input="What is the weather in Paris?", tools=tools
)
calls = [item for item in response.output if item.type == "function_call"]
if calls:
    outputs = [
        {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": json.dumps({"city": json.loads(call.arguments).get("city"), "sky": "clear"}),
        }
        for call in calls
    ]
    response = client.responses.create(
        model=model, previous_response_id=response.id, input=outputs, tools=tools
    )
print(response.output_text)
