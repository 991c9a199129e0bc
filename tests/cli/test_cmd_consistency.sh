#!/bin/sh
# The commands behave alike (fi-frame(5), fi(7)), on the embedded model: -i FILE and -o FILE
# on every command that reads or writes frames; a store name wins over a directory of the
# same name unless the argument has a slash; no temporary file names in messages; fi-load
# warns about a model without a tokenizer; fi-tokenize --chat --render prints the rendered
# text; fi-tokenize refuses request fields as fi-decode does, with its message; a backend
# that cannot start is a runtime error (1), an unknown backend name a usage error (2).
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fi-load "$root/models/tiny" --name tiny > /dev/null 2> err || fail "fi-load tiny: $(cat err)"
[ ! -s err ] || fail "fi-load tiny warned: $(cat err)"
printf 'The cat sat\nImport the module\n' > prompts.txt

# -i FILE / -o FILE through the whole toolchain give what the pipe gives.
fi-tokenize -m tiny < prompts.txt | fi-decode -m tiny -n 8 --temp 0 | fi-tokenize -m tiny -d > want.txt ||
	fail "pipe"
fi-tokenize -m tiny -i prompts.txt -o req.mp || fail "fi-tokenize -o FILE"
fi-decode -m tiny -n 8 --temp 0 -i req.mp -o out.mp || fail "fi-decode -i/-o FILE"
fi-tokenize -m tiny -d -i out.mp -o got.txt || fail "fi-tokenize -d -i/-o FILE"
cmp -s want.txt got.txt || fail "files differ from the pipe: $(cat got.txt)"
[ "$(wc -l < got.txt)" -ge 2 ] || fail "too little text: $(cat got.txt)"
fi-prefill -m tiny --temp 0 -i req.mp -o pre.mp || fail "fi-prefill -i/-o FILE"
fi-decode -m tiny -n 8 --temp 0 < pre.mp | fi-tokenize -m tiny -d > got2.txt || fail "prefilled"
cmp -s want.txt got2.txt || fail "fi-prefill -o FILE: other text: $(cat got2.txt)"
fi-tokenize -m tiny --ids -o ids.txt < prompts.txt || fail "--ids -o FILE"
[ "$(wc -l < ids.txt)" -eq 2 ] || fail "--ids -o FILE: $(cat ids.txt)"
fi-decode -m tiny -i nosuch.mp > /dev/null 2> err; [ $? -eq 1 ] || fail "-i missing file: status"
[ "$(cat err)" = "fi-decode: cannot open 'nosuch.mp': No such file or directory" ] ||
	fail "-i missing file: $(cat err)"
fi-prefill -m tiny -o no/such/dir.mp < req.mp 2> err; [ $? -eq 1 ] || fail "-o bad path: status"
grep -q "^fi-prefill: cannot open 'no/such/dir.mp': " err || fail "-o bad path: $(cat err)"

# A store name wins over a same-named directory in the working directory; ./NAME is the
# directory (here not a model).
mkdir tiny
fi-decode -m tiny --tokens 1,2 -n 2 --temp 0 > /dev/null 2> err || fail "store name lost: $(cat err)"
fi-decode -m ./tiny --tokens 1,2 -n 2 > /dev/null 2> err; [ $? -eq 1 ] || fail "./tiny: status"
grep -q "^fi-decode: .*'./tiny" err || fail "./tiny message: $(cat err)"
fi-tokenize -m tiny --count < prompts.txt > /dev/null 2> err || fail "fi-tokenize: store name lost"
rmdir tiny

# A model without a tokenizer: fi-load warns; converted on the fly, messages name the
# directory, never a temporary file.
mkdir notok
for f in config.json generation_config.json model.safetensors; do cp "$root/models/tiny/$f" notok/; done
fi-load notok > out 2> err || fail "fi-load notok: $(cat err)"
grep -q "^fi-load: warning: 'notok' has no tokenizer.json" err || fail "no warning: $(cat err)"
fi-decode -m ./notok --prompt 'hello' -n 2 > /dev/null 2> err; [ $? -eq 1 ] || fail "notok --prompt: status"
grep -q "fi-convert" err && fail "temporary name in: $(cat err)"
grep -q "^fi-decode: --prompt: './notok': the model image holds no tokenizer" err ||
	fail "notok message: $(cat err)"
fi-load -i ./notok | grep -q "^path  *./notok$" || fail "-i ./notok path"

# --chat --render: the rendered template text, exactly; no frames.
printf '%s\n' '[{"role":"user","content":"hi"}]' | fi-tokenize -m tiny --chat --render > r.txt ||
	fail "--render"
printf '<|user|>\nhi<|end|>\n<|assistant|>\n' | cmp -s - r.txt || fail "--render: $(od -c r.txt)"

# Request fields are refused by fi-tokenize as fi-decode refuses them, with its message.
printf '%s\n' '{"prompt":"a","temperature":-1}' '{"prompt":"b","top_k":2}' \
	'{"prompt":"c","stop":"x"}' '{"prompt":"d","max_tokens":-5}' > req.jsonl
fi-tokenize -m tiny --jsonl < req.jsonl > req2.mp 2> err; [ $? -eq 3 ] || fail "bad fields: status"
grep -q "^fi-tokenize: line 1: request '1': frame: key 'temperature': -1 is out of range \[0, 10000\]$" err ||
	fail "temperature message: $(cat err)"
grep -q "^fi-tokenize: line 3: request '3': frame: key 'stop': expected array of str, got str$" err ||
	fail "stop message: $(cat err)"
grep -q "^fi-tokenize: line 4: request '4': frame: key 'max_tokens': negative value -5$" err ||
	fail "max_tokens message: $(cat err)"
grep -q "^fi-tokenize: 3 of 4 requests failed$" err || fail "summary: $(cat err)"
[ "$(grep -c . err)" -eq 4 ] || fail "messages: $(cat err)"
grep -q "error:" err && fail "'error:' prefix: $(cat err)"
fi-decode -m tiny -n 2 < req2.mp > out2.mp 2> /dev/null
[ "$(frames_count out2.mp done)" -eq 1 ] || fail "good request: $(fi-frame < out2.mp)"
fi-frame --id 1 -t error < out2.mp | grep -q "key 'temperature': -1 is out of range \[0, 10000\]" ||
	fail "error frame of request 1: $(fi-frame < out2.mp)"

# Backends: an unknown name is a usage error; one that cannot start a runtime error.
fi-decode -m tiny --backend gpu --tokens 1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "--backend gpu"
if ! fi-bench -m tiny --backend cuda -r 1 tg1 > /dev/null 2>&1; then
	fi-decode -m tiny --backend cuda --tokens 1 > /dev/null 2> err; rc=$?
	[ $rc -eq 1 ] || fail "--backend cuda without a GPU: exit $rc"
	grep -q "^fi-decode: " err || fail "--backend cuda message: $(cat err)"
else
	echo "note: a CUDA device is present; the no-GPU exit status is not checked here"
fi
echo "ok"
