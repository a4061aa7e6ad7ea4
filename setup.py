"""The compiled core of the suffix trie (C sources in spec_sdk/proposers/csrc/suffix/).

Everything else is in pyproject.toml. `optional=True`: without a C compiler the install goes
on, and `SuffixProposer(core="auto")` uses the pure-Python trie (same results, slower).

The sources are not in a folder named `_suffix_core`: without the built module, such a folder
would import as an (empty) namespace package in its place.
"""

from setuptools import Extension, setup

SRC = "spec_sdk/proposers/csrc/suffix"

setup(
    ext_modules=[
        Extension(
            "spec_sdk.proposers._suffix_core",
            [f"{SRC}/{name}.c" for name in ("kids", "trie", "draft", "check", "module")],
            # the shared header: rebuilds when it changes, and goes into the sdist
            depends=[f"{SRC}/trie.h"],
            optional=True,
            # -ffp-contract=off: no fused multiply-adds, so that scores equal the Python
            # trie's to the last bit.
            extra_compile_args=["-O2", "-ffp-contract=off"],
        )
    ],
)
