#!/usr/bin/env python3
"""Prints the [vars] and [secrets] tables of a lab inventory.

usage: inventory-vars.py PRODUCT_INVENTORY < LAB_VARS

[vars] is the product inventory's [vars] with the lab's own values (TOML `key = value` lines on
stdin) winning; [secrets] is the product's declarations as they are. So the lab runs the
product's playbooks with the product's variables, and only addresses and CIDRs are the lab's.
"""

import sys
import tomllib


def toml_value(key, value):
    # bool before int: bool is an int in Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return toml_scalar(value)
    if isinstance(value, list) and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
        return "[" + ", ".join(toml_scalar(v) for v in value) + "]"
    # Inline tables (registry_mirrors = { "registry.k8s.io" = { url = "..." } }).
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_scalar(k)} = {toml_value(f'{key}.{k}', v)}" for k, v in value.items()) + " }" if value else "{}"
    sys.exit(f"inventory-vars.py: {key}: only strings, integers, booleans, lists of those and tables are supported")


def toml_scalar(value):
    if isinstance(value, int):
        return str(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 0x20 for c in escaped):
        sys.exit(f"inventory-vars.py: control character in {value!r}")
    return f'"{escaped}"'


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        product = tomllib.load(f)
    lab = tomllib.loads(sys.stdin.read())
    variables = {**product.get("vars", {}), **lab}
    print("[vars]")
    for key, value in variables.items():
        print(f"{key} = {toml_value(key, value)}")
    print()
    print("[secrets]")
    for key, value in product.get("secrets", {}).items():
        print(f"{key} = {toml_value(key, value)}")


main()
