#!/usr/bin/env python3
"""The cases of test_fi_route.sh through the official openai client, against a running
fi-route (.ci/run starts it): completions, chat, streaming with usage, stop, a cancelled
stream, models, and the 400 of an unsupported parameter.
With "real" (fi-decode workers, not the null worker) the generated text is not known, so
only its shape is checked.
usage: openai_client.py BASE_URL MODEL [real]"""
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
real = sys.argv[3:] == ["real"]
c = openai.OpenAI(base_url=base, api_key="none", max_retries=0)

r = c.completions.create(model=model, prompt="Once upon a time there was", max_tokens=6)
assert r.choices[0].finish_reason == "length", r
assert real or r.choices[0].text.startswith("Once upon"), r
assert r.usage.completion_tokens == 6 and r.usage.prompt_tokens > 0, r

r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi there"}],
                              max_completion_tokens=4, logprobs=True, top_logprobs=0)
assert r.choices[0].message.role == "assistant" and r.choices[0].message.content, r
assert len(r.choices[0].logprobs.content) == 4, r

chunks = list(c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=5, stream=True,
                                        stream_options={"include_usage": True}))
assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
assert chunks[-1].usage.completion_tokens == 5, chunks[-1]
assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["length"]

r = c.completions.create(model=model, prompt="Once upon a time there was", max_tokens=50, stop=["time"])
assert (r.choices[0].finish_reason == "stop" or real) and "time" not in r.choices[0].text, r

s = c.completions.create(model=model, prompt="Once upon a time", max_tokens=400, stream=True)
next(iter(s))
s.close()  # the client goes away: fi-route cancels the request

assert [m.id for m in c.models.list()] == [model]

try:
    c.completions.create(model=model, prompt="x", n=2)
    raise SystemExit("n=2 was not refused")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.body["param"] == "n", e.body

print("openai client: all cases passed")
