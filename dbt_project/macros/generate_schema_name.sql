{# Schemas are the Iceberg namespaces themselves (gold, not <target>_gold): asset key
   gold/operator_features is table gold.operator_features on every target. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name if custom_schema_name is not none else target.schema }}
{%- endmacro %}
