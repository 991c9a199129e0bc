{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}
