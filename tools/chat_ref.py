#!/usr/bin/env python3
"""Reference outputs of chat templates, from transformers, for tests/unit/test_chat.c.

For every tokenizer in the corpus that has a chat template, renders a fixed set of
conversations the way tokenizer.apply_chat_template(tokenize=False) does (transformers'
render_jinja_template with the tokenizer's special tokens, null-valued message keys dropped),
and writes tests/fixtures/chat/<name>.json with the inputs and the expected text or error.
Where the tokenizer itself loads (tokenizer.json present), the result is checked against
apply_chat_template. strftime_now is pinned to NOW so the C side can reproduce it.

Also writes tests/fixtures/chat/synthetic.json: small templates that exercise the Jinja
features real templates use, rendered by the same machinery.

usage: tools/chat_ref.py [CORPUS_DIR] (default ../shared/corpus)
"""
import datetime as _dt
import json
import os
import sys

import transformers.utils.chat_template_utils as ctu
from transformers.utils.chat_template_utils import render_jinja_template

NOW = 1768473000  # 2026-01-15 10:30:00 UTC
SPECIAL = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]
TEMPLATES = ["llama-3", "tinyllama-1.1b-chat", "phi-2", "phi-4-mini", "gemma", "smollm3",
             "deepseek-r1-distill", "gpt-oss", "llama-2", "gpt2"]


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return _dt.datetime.fromtimestamp(NOW, _dt.timezone.utc).replace(tzinfo=None)


def pin_clock():
    # strftime_now is a closure over the module's datetime; compiled templates are cached
    ctu.datetime = _FixedDatetime
    ctu._compile_jinja_template.cache_clear()


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"},
        "days": {"type": "integer", "description": "Days ahead", "default": 1}},
        "required": ["city"]}}}]

UNICODE = "héllo wörld — 你好 🙂 \"double\" 'single' \\ back\ttab\nnew line ☃ é"

CONVERSATIONS = [
    ("user", [{"role": "user", "content": "Hello!"}]),
    ("system_user", [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is 2+2?"}]),
    ("multi_turn", [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke."}]),
    ("no_system_multi", [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
                         {"role": "user", "content": "three"}, {"role": "assistant", "content": "four"}]),
    ("empty_content", [{"role": "user", "content": ""}]),
    ("empty_assistant", [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""},
                         {"role": "user", "content": "y"}]),
    ("unicode", [{"role": "user", "content": UNICODE},
                 {"role": "assistant", "content": "  padded answer  \n\n"},
                 {"role": "user", "content": "\n  leading and trailing space  "}]),
    ("reasoning", [{"role": "user", "content": "Solve it"},
                   {"role": "assistant", "content": "<think>\nlet me think\n</think>\n\nThe answer is 4."},
                   {"role": "user", "content": "Thanks"}]),
    ("reasoning_field", [{"role": "user", "content": "Q"},
                         {"role": "assistant", "content": "A", "reasoning_content": "thought"},
                         {"role": "user", "content": "Q2"}]),
    ("null_keys", [{"role": "user", "content": "hi", "name": None}]),
    ("system_only", [{"role": "system", "content": "sys /no_think"}]),
    ("think_flags", [{"role": "system", "content": "Answer well. /think"}, {"role": "user", "content": "q"}]),
    ("tools", {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS}),
    ("tool_calls", [{"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": "",
                     "tool_calls": [{"type": "function", "name": "get_weather",
                                     "arguments": {"city": "Paris"},
                                     "function": {"name": "get_weather",
                                                  "arguments": "{\"city\": \"Paris\"}"}}]},
                    {"role": "tool", "content": "{\"temp\": 21}"},
                    {"role": "assistant", "content": "It is 21 degrees."}]),
    ("no_thinking", {"messages": [{"role": "user", "content": "hi"}], "enable_thinking": False}),
    ("gpt_oss_options", {"messages": [{"role": "developer", "content": "Use short answers."},
                                      {"role": "user", "content": "hi"},
                                      {"role": "assistant", "content": "hello", "thinking": "greet",
                                       "channel": "final"}],
                         "reasoning_effort": "high", "model_identity": "You are Fi.",
                         "builtin_tools": ["browser", "python"]}),
    ("gpt_oss_analysis", {"messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "thinking aloud"},
                                       {"role": "user", "content": "and?"}],
                          "tools": TOOLS}),
    ("continue_final", {"messages": [{"role": "user", "content": "Count to three."},
                                     {"role": "assistant", "content": "One, two,  "}],
                        "continue_final_message": True}),
    ("continue_final_parts", {"messages": [{"role": "user", "content": "Hi"},
                                           {"role": "assistant", "content": [{"type": "text", "text": "Hel"}]}],
                              "continue_final_message": True}),
    ("content_parts", [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image"}]}]),
    ("roles_not_alternating", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
]


def special_tokens(cfg):
    out = {}
    for k in SPECIAL:
        v = cfg.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        if v is not None:
            out[k] = str(v)
    return out


def load_template(d, cfg):
    p = os.path.join(d, "chat_template.jinja")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            return f.read()
    t = cfg.get("chat_template")
    if isinstance(t, list):
        t = {x["name"]: x["template"] for x in t}.get("default")
    return t


def render(template, specials, request, agp):
    if isinstance(request, list):
        request = {"messages": request}
    messages = [{k: v for k, v in m.items() if v is not None} for m in request["messages"]]
    extra = {k: v for k, v in request.items() if k not in ("messages", "tools", "continue_final_message")}
    cfm = request.get("continue_final_message", False)
    try:
        if cfm and agp:  # apply_chat_template refuses the pair before rendering
            raise ValueError("continue_final_message and add_generation_prompt are not compatible")
        out, _ = render_jinja_template(conversations=[messages], tools=request.get("tools"),
                                       chat_template=template, add_generation_prompt=agp,
                                       continue_final_message=cfm, **{**specials, **extra})
        return {"expected": out[0]}
    except Exception as e:  # the C side must fail too; raise_exception messages must match
        r = {"error": f"{type(e).__name__}: {e}"}
        if type(e).__name__ == "TemplateError":
            r["raised"] = str(e)
        return r


def check_with_tokenizer(d, request, agp, got):
    try:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    except Exception:
        return None
    if isinstance(request, list):
        request = {"messages": request}
    extra = {k: v for k, v in request.items() if k not in ("messages", "tools")}
    try:
        want = tok.apply_chat_template(request["messages"], tools=request.get("tools"),
                                       tokenize=False, add_generation_prompt=agp, **extra)
        want = {"expected": want}
    except Exception as e:
        want = {"error": f"{type(e).__name__}: {e}"}
    if ("expected" in want) != ("expected" in got) or want.get("expected") != got.get("expected"):
        raise SystemExit(f"{d}: render_jinja_template and apply_chat_template disagree")
    return True


FUZZ_SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "corpus",
                          "fuzz_jinja")


def seed(name, template):
    """A seed for tests/fuzz/fuzz_jinja.c (also replayed by make check)."""
    os.makedirs(FUZZ_SEEDS, exist_ok=True)
    with open(os.path.join(FUZZ_SEEDS, name), "w", encoding="utf-8") as f:
        f.write(template)


def main():
    corpus = sys.argv[1] if len(sys.argv) > 1 else "../shared/corpus"
    outdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "chat")
    os.makedirs(outdir, exist_ok=True)
    pin_clock()
    for name in TEMPLATES:
        d = os.path.join(corpus, "tokenizers", name)
        cfgp = os.path.join(d, "tokenizer_config.json")
        if not os.path.exists(cfgp):
            print(f"{name}: absent, skipped")
            continue
        with open(cfgp, encoding="utf-8") as f:
            cfg = json.load(f)
        template = load_template(d, cfg)
        fx = {"dir": f"tokenizers/{name}", "now": NOW, "has_template": template is not None,
              "cases": []}
        checked = 0
        if template is not None:
            specials = special_tokens(cfg)
            for cname, req in CONVERSATIONS:
                for agp in (False, True):
                    r = render(template, specials, req, agp)
                    if check_with_tokenizer(d, req, agp, r):
                        checked += 1
                    fx["cases"].append({"name": cname, "add_generation_prompt": agp,
                                        "request": req, **r})
        with open(os.path.join(outdir, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(fx, f, ensure_ascii=False, indent=1)
            f.write("\n")
        if template is not None:
            seed(f"{name}.jinja", template)
        nerr = sum("error" in c for c in fx["cases"])
        print(f"{name}: {len(fx['cases'])} cases ({nerr} errors), {checked} checked against apply_chat_template")
    import chat_ref_synthetic
    chat_ref_synthetic.write(outdir, render)
    for cname, tpl in chat_ref_synthetic.CASES:
        seed(f"synthetic_{cname}.jinja", tpl)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
