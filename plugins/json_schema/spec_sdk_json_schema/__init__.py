"""Structured-output speculation for spec_sdk: draft what a JSON schema forces."""

from spec_sdk_json_schema.machine import Machine, Style
from spec_sdk_json_schema.proposer import JsonSchemaProposer
from spec_sdk_json_schema.schema import compile_schema

__all__ = ["JsonSchemaProposer", "Machine", "Style", "compile_schema"]
