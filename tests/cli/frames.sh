# Frame helpers for the shell tests, over fi-frame and jq (sourced: . tests/cli/frames.sh).
#   frames_same A B            exit 0 when the frame files A and B hold the same token and
#                              done frames for every request id, in order per id, and the same
#                              error codes (timings and cached_tokens excluded: they say how,
#                              not what); prints the first difference otherwise
#   frames_prompts N LEN SEED [MAXTOK]
#                              N greedy request frames (JSON lines, for fi-frame -e) with
#                              random token prompts of about LEN tokens (ids 2..4095), made
#                              with awk's generator seeded with SEED
#   frames_count FILE TYPE     how many frames of TYPE the frame file holds
command -v jq > /dev/null || { echo "SKIPPED: jq absent (tools/deps.sh installs it)" >&2; exit 77; }
command -v fi-frame > /dev/null || { echo "SKIPPED: fi-frame not built" >&2; exit 77; }

# One line per request id, in order of the ids: the list of its frames' keys.
frames_norm() {
	fi-frame -t token,done,error < "$1" | jq -c '
		if .type == "token" then [.id, "token", .token, .index, .text]
		elif .type == "done" then [.id, "done", .finish, .counts.prompt_tokens,
					   .counts.gen_tokens, .tokens, .text]
		else [.id, "error", .code] end' | jq -s -c 'group_by(.[0]) | .[]'
}

frames_same() {
	_fa=$(mktemp) _fb=$(mktemp)
	frames_norm "$1" > "$_fa" && frames_norm "$2" > "$_fb" || { rm -f "$_fa" "$_fb"; return 1; }
	if ! cmp -s "$_fa" "$_fb"; then
		diff "$_fa" "$_fb" | head -n 4
		rm -f "$_fa" "$_fb"
		return 1
	fi
	rm -f "$_fa" "$_fb"
}

frames_prompts() {
	awk -v n="$1" -v len="$2" -v seed="$3" -v mt="${4:-8}" 'BEGIN {
		srand(seed)
		for (i = 0; i < n; i++) {
			m = len + int(rand() * (int(len / 2) + 1)) - int(len / 4)
			if (m < 1) m = 1
			s = "0"
			for (j = 1; j < m; j++) s = s "," (2 + int(rand() * 4094))
			printf "{\"v\":1,\"type\":\"request\",\"id\":\"q%d\",\"tokens\":[%s],", i, s
			printf "\"max_tokens\":%d,\"temperature\":0}\n", mt
		}
	}'
}

frames_count() {
	fi-frame -t "$2" < "$1" | wc -l | tr -d ' '
}
