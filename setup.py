"""The compiled core of the suffix trie (spec_sdk/proposers/_suffix_core.c).

Everything else is in pyproject.toml. `optional=True`: without a C compiler the install goes
on, and `SuffixProposer(core="auto")` uses the pure-Python trie (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "spec_sdk.proposers._suffix_core",
            ["spec_sdk/proposers/_suffix_core.c"],
            optional=True,
            # -ffp-contract=off: no fused multiply-adds, so that scores equal the Python
            # trie's to the last bit.
            extra_compile_args=["-O2", "-ffp-contract=off"],
        )
    ],
)
