"""Small templates exercising the Jinja features chat templates use; rendered by
tools/chat_ref.py through transformers into tests/fixtures/chat/synthetic.json."""
import json
import os

M = [{"role": "system", "content": "Sys"}, {"role": "user", "content": " Hi there "},
     {"role": "assistant", "content": "Hello", "tool_calls": [{"name": "f", "arguments": {"a": 1, "b": [1.5, None, True]}}]},
     {"role": "user", "content": "héllo 🙂\n"}]
REQ = {"messages": M, "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]}

# Templates in the style of other popular models (Qwen2.5, Mistral, Llama 3.1 with tools):
# long, indented, with '-' whitespace control throughout.
QWEN25 = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''

MISTRAL = r'''{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
'''

LLAMA31 = r'''{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0] %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
'''

WHITESPACE = r'''{% for m in messages %}
  {% if m.role == 'user' %}
    User: {{ m.content }}
  {% else %}
    Other: {{ m.role }}
  {% endif %}
{% endfor %}
  {# comment #}
	{%- if true %}
  x {{ 'y' }}   
{%+ if true %} plus {% endif +%}
   {% raw %}  raw {{ }}  {% endraw %}   
end
'''


CASES = [
    ("loop_vars", "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }}|{% endfor %}"),
    ("loop_prev_next", "{% for m in messages %}[{{ loop.previtem.role if loop.previtem is defined else '-' }}>{{ m.role }}>{{ loop.nextitem.role if loop.nextitem is defined else '-' }}]{% endfor %}"),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}{% for x in messages if x.role == 'user' %}{{ loop.index }}{{ x.content|trim }}{% endfor %}"),
    ("for_unpack", "{% for k, v in messages[2].tool_calls[0].arguments.items() %}{{ k }}={{ v }};{% endfor %}{% for a, b in [(1, 2), [3, 4]] %}{{ a + b }}{% endfor %}"),
    ("break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 5 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
    ("nested_loops", "{% for m in messages %}{% for c in m.role %}{{ loop.index }}{{ c }}{% endfor %}{{ loop.index }};{% endfor %}"),
    ("if_elif", "{% for m in messages %}{% if m.role == 'system' %}S{% elif m.role == 'user' %}U{% elif m.role == 'tool' %}T{% else %}A{% endif %}{% endfor %}"),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }} {{ ns.s }}"),
    ("scoping", "{% set x = 1 %}{% for m in messages %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set y = 5 %}{% endif %}{{ y }}"),
    ("block_set", "{% set body %}\n  {{ messages[0].content }}!\n{% endset %}[{{ body }}]{% set t | upper %}abc{% endset %}{{ t }}"),
    ("macro", "{% macro tag(name, value='dflt', sep=': ') %}<{{ name }}{{ sep }}{{ value }}>{% endmacro %}{{ tag('a') }}{{ tag('b', 2) }}{{ tag('c', sep='=', value=3) }}{{ tag('d')|length }}"),
    ("macro_recursive", "{% macro r(n) %}{% if n > 0 %}{{ n }}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(5) }}"),
    ("raw", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}ok"),
    ("whitespace_control", "a  {%- if true -%}  b  {%- endif -%}  c\n  {{- ' d ' -}}  \ne {{ 'f' }}\n  {% if true %}\n    g\n  {% endif %}\nh{# comment #}\ni  {#- c2 -#}  j\n{% for x in [1,2] %}\n{{ x }}\n{% endfor %}\n"),
    ("lstrip_plus", "x\n  {%+ if true %}y{% endif %}\n  {{ 'z' }}\n\t{% if true +%}\nw{% endif %}"),
    ("crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\r\n"),
    ("arith", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-7 }} {{ 10 / 4 }} {{ 3.0 }} {{ -0.0 }} {{ 123456789.0 * 1000 }}"),
    ("compare", "{{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] == [1, 2] }} {{ 'x' in 'xyz' }} {{ 'q' not in ['a'] }} {{ 'role' in messages[0] }} {{ none == none }} {{ true == 1 }} {{ messages[0] != messages[1] }}"),
    ("logic", "{{ true and 'x' }} {{ false or 'y' }} {{ none or 0 }} {{ not messages }} {{ 'a' if false }}|{{ 'a' if false else 'b' }} {{ 1 if true else 2 }}"),
    ("strings", "{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' + 'cd' }} {{ 'x' * 3 }} {{ 'abc'[::-1] }} {{ 'abcdef'[1:4] }} {{ 'abcdef'[-2:] }} {{ 'abcdef'[::2] }} {{ 'héllo'[1] }} {{ 'héllo'|length }} {{ \"it's\" }} {{ 'say \"hi\"' }} {{ 'tab\\there' }} {{ '\\u00e9\\x41' }}"),
    ("str_methods", "{% set s = '  Hello World  ' %}[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ s.upper() }}][{{ s.lower() }}][{{ s.title() }}][{{ s.replace('l', 'L') }}][{{ s.split() }}][{{ 'a,b,,c'.split(',') }}][{{ 'a b c'.split(' ', 1) }}][{{ 'a,b,c'.rsplit(',', 1) }}][{{ s.startswith('  H') }}][{{ s.endswith(('x', '  ')) }}][{{ 'xxhixx'.strip('x') }}][{{ 'hello'.capitalize() }}][{{ 'abc'.find('c') }}][{{ 'a-b'.count('-') }}][{{ '-'.join(['a', 'b']) }}][{{ '12'.isdigit() }}]"),
    ("list_dict_methods", "{% set d = {'b': 1, 'a': [1, 2], 'c': none} %}{{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }} {{ d.get('a') }} {{ d.get('zz', 'dflt') }} {{ d.get('zz') }} {{ d['b'] }} {{ d.b }} {{ [1, 2, 1].count(1) }} {{ [3, 4].index(4) }}"),
    ("subscripts", "{{ messages[0]['role'] }} {{ messages[-1].content }} {{ messages[1:3]|length }} {{ messages[::-1][0].role }} {{ messages[99] is defined }} {{ messages[0].nope is defined }} {{ messages[0]['nope'] is undefined }} {{ (messages|last).role }}"),
    ("filters_basic", "{{ '  x  '|trim }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 'hello world'|title }}|{{ 'hELLO'|capitalize }}|{{ [1, 2, 3]|length }}|{{ 'abc'|count }}|{{ [1, 2, 3]|first }}|{{ [1, 2, 3]|last }}|{{ [1, 2, 3]|join(', ') }}|{{ 'abc'|list }}|{{ 'a-b'|replace('-', '+') }}|{{ 42|string }}|{{ '42'|int + 1 }}|{{ '4.5'|float }}|{{ 'x'|int }}|{{ 3.7|int }}|{{ -3|abs }}|{{ [3, 1, 2]|sort }}|{{ [3, 1, 2]|sort(reverse=true) }}|{{ ['b', 'A', 'a']|sort }}|{{ [1, 2, 2, 1]|unique|list }}|{{ [1, 2]|reverse|list }}|{{ 'abc'|reverse }}|{{ [1, 2.5]|sum }}|{{ [4, 2, 9]|min }}{{ [4, 2, 9]|max }}|{{ 2.5|round }}|{{ 3.14159|round(2) }}|{{ 'a b  c'|wordcount }}"),
    ("filters_default", "{{ undefined_var|default('d') }}|{{ none|default('d') }}|{{ ''|default('d', true) }}|{{ ''|d('e', boolean=true) }}|{{ 'v'|default('d') }}|{{ undefined_var|length }}|{{ undefined_var|list }}|[{{ undefined_var }}]|{{ undefined_var is defined }}|{{ undefined_var|string }}"),
    ("filters_attr", "{{ messages|map(attribute='role')|join(',') }}|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ messages|rejectattr('role', 'eq', 'user')|map(attribute='role')|list }}|{{ messages|selectattr('tool_calls', 'defined')|list|length }}|{{ [1, 2, 3, 4]|select('odd')|list }}|{{ [1, 2, 3, 4]|reject('divisibleby', 2)|list }}|{{ ['a', 'b']|map('upper')|list }}|{{ messages|map(attribute='tool_calls.0.name', default='-')|list }}|{{ {'b': 2, 'a': 1}|dictsort }}|{{ {'b': 2, 'a': 1}|items|list }}"),
    ("tojson", "{{ messages[2].tool_calls[0].arguments|tojson }}|{{ 'héllo \"q\" \\\\ \\n'|tojson }}|{{ tools|tojson }}|{{ tools[0]|tojson(indent=2) }}|{{ {'a': [], 'b': {}}|tojson(indent=4) }}|{{ [1.0, 2.5e-8, 1e300, none, true]|tojson }}|{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}|{{ {'a': 1}|tojson(separators=(',', ':')) }}"),
    ("repr", "{{ messages[2] }}|{{ messages[2].tool_calls }}|{{ tools[0]|string }}|{{ [\"it's\", 'a\"b', 'x\\ny', 'é', none, 1.5, (1,), ()] }}|{{ {'k': (1, 2)} }}"),
    ("tests", "{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}{{ true is number }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 'x' is sequence }}{{ none is none }}{{ x is undefined }}{{ 1 is defined }}{{ 4 is divisibleby 2 }}{{ 3 is odd }}{{ 2 is even }}{{ 'a' is in 'abc' }}{{ 1 is eq 1 }}{{ 2 is gt 1 }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ true is true }}{{ false is false }}{{ 0 is false }}{{ messages is not string }}{{ none is sameas none }}"),
    ("globals", "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b='x') }} {{ namespace(a=1) }} {{ bos_token }}{{ eos_token }} {{ add_generation_prompt }} {{ tools|length }} {{ documents }} {{ strftime_now('%Y-%m-%d %H:%M %A %B %d') }}"),
    ("raise", "{% if messages|length > 2 %}{{ raise_exception('Too many messages: ' ~ messages|length) }}{% endif %}ok"),
    ("undefined_attr_error", "{{ missing.attr }}"),
    ("type_error", "{{ 'a' + 1 }}"),
    ("unsafe_append", "{% set l = [] %}{{ l.append(1) }}"),
    ("filter_block", "{% filter upper %}abc {{ messages[0].content }}{% endfilter %}"),
    ("generation_tag", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.role }}{% endif %}{% endfor %}"),
    ("indent", "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(width='>', blank=true) }}"),
    ("escape_safe", "{{ '<a href=\"x\">&\\'</a>'|e }}|{{ '<b>'|safe }}|{{ '<i>'|escape }}"),
    ("int_overflowish", "{{ 9223372036854775807 }} {{ 2 ** 62 }} {{ 10 ** 18 }}"),
    ("dict_literal_order", "{% set d = {'z': 1, 'a': 2, 'm': 3} %}{% for k in d %}{{ k }}{% endfor %}{{ d|length }}{{ d }}"),
    ("tool_loop", "{% for tool in tools %}{% set f = tool.function %}{{ f.name }}({% for p, spec in f.parameters.properties.items() %}{{ p }}: {{ spec.type }}{% if not loop.last %}, {% endif %}{% endfor %}){% endfor %}"),
    ("cond_expr_chain", "{% for m in messages %}{{ 'S' if m.role == 'system' else 'U' if m.role == 'user' else 'A' }}{% endfor %}"),
    ("content_parts", "{% set c = [{'type': 'text', 'text': 'hi'}, {'type': 'image'}] %}{% for p in c %}{% if p.type == 'text' %}{{ p.text }}{% elif p['type'] == 'image' %}<img>{% endif %}{% endfor %}{{ c is not string }}"),
    ("generators", "{{ not (messages | selectattr('role', 'eq', 'nobody')) }} {{ messages | map(attribute='role') | list | length }} {% set g = messages | map(attribute='role') %}{% for r in g %}{{ r }}{% endfor %}|{% for r in g %}{{ r }}{% endfor %}| {{ [1, 2] | reverse | list }} {{ (messages | selectattr('role', 'eq', 'x')) is defined }}"),
    ("generator_length_error", "{{ messages | selectattr('role', 'eq', 'user') | length }}"),
    ("ranges_and_subscripts", "{{ range(3) }} {{ range(1, 9, 2) }} {{ range(3) == [0, 1, 2] }} {{ range(3) | list }} {{ {(1, 2): 'x'}[1, 2] }} {{ 'abc'[::-1] }} {{ 1[::-1] }}|{{ [1, 2][5:] }}"),
    ("slice_error", "{% set n = 5 %}{{ n[1:] }}"),
    ("loop_changed", "{% for x in [1, 1, 2, 2, 1] %}{{ loop.changed(x) }}{% endfor %}{% for m in messages %}{% if loop.changed(m.role) %}[{{ m.role }}]{% endif %}{% endfor %}"),
    ("call_block", "{% macro box(t) %}[{{ t }}:{{ caller() }}]{% endmacro %}{% call box('a') %}in {{ messages[0].role }}{% endcall %}{% macro each(xs) %}{% for x in xs %}{{ caller(x) }};{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}<{{ x * 2 }}>{% endcall %}"),
    ("with_block", "{% set a = 5 %}{% with a = a + 1, b = 'x' %}{{ a }}{{ b }}{% set z = 1 %}{% endwith %}{{ a }}[{{ b }}{{ z }}]"),
    ("percent_format", "{{ '%s=%d (%5.2f%%) %r|%-4s|%04x' % ('n', 7, 12.345, 'q', 'ab', 255) }} {{ '%(role)s: %(content)s' % messages[0] }} {{ '%s-%s'|format(1, 'b') }}"),
    ("percent_format_big_float", "{{ '%d|%+d|%30d|%-25i|%05d|%u|%#d' % (5.55556e+28, -5.55556e+28, 1e20, 1e20, 1e19, 9.2e18, 1e300) }} {{ '%d' % -9.223372036854775808e18 }} {{ '%d %i' % (3.7, -2.5) }}"),
    ("percent_format_x_float_error", "{{ '%x' % 3.5 }}"),
    ("percent_format_c_float_error", "{{ '%c' % 65.0 }}"),
    ("escape_unicode_max", "{{ '\\U0010ffff|\\u00e9|\\x41|\\101'|length }}"),
    ("escape_unicode_illegal_error", "{{ '\\Udddddddd' }}"),
    ("constant_folding", "{{ 1[::-1] }}|{{ [1, 2][1:] }}|{{ ''[1:]|length }}"),
    ("style_qwen25", QWEN25),
    ("style_mistral", MISTRAL),
    ("style_llama31", LLAMA31),
    ("style_whitespace", WHITESPACE),
    ("syntax_unclosed", "{% for m in messages %}{{ m.role }}"),
    ("syntax_bad_expr", "{{ 1 + }}"),
    ("syntax_unknown_filter", "{{ 'a'|nosuchfilter }}"),
    ("syntax_unknown_tag", "{% frobnicate %}"),
    ("syntax_unclosed_comment", "a {# never closed"),
    ("syntax_endfor_stray", "{% endfor %}"),
]


def write(outdir, render):
    specials = {"bos_token": "<s>", "eos_token": "</s>"}
    cases = []
    for name, tpl in CASES:
        for agp in (False, True):
            r = render(tpl, specials, REQ, agp)
            cases.append({"name": name, "template": tpl, "add_generation_prompt": agp, **r})
    fx = {"specials": specials, "request": REQ, "cases": cases}
    with open(os.path.join(outdir, "synthetic.json"), "w", encoding="utf-8") as f:
        json.dump(fx, f, ensure_ascii=False, indent=1)
        f.write("\n")
    nerr = sum("error" in c for c in cases)
    print(f"synthetic: {len(cases)} cases ({nerr} errors)")
