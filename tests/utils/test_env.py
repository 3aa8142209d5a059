"""The measurement environment record: CPU name and int8-relevant instruction sets."""

from __future__ import annotations

import json

from nnshrink.utils import environment
from nnshrink.utils.env import cpu_info

AVX2_ONLY = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""
VNNI = "model name\t: Intel(R) Xeon(R)\nflags\t\t: avx2 avx512f avx512_vnni amx_int8\n"


def test_cpu_info_names_the_int8_relevant_flags():
    assert cpu_info(AVX2_ONLY) == {"cpu_model": "AMD EPYC 7B13", "cpu_isa": ["avx2"]}
    assert cpu_info(VNNI)["cpu_isa"] == ["avx2", "avx512f", "avx512_vnni", "amx_int8"]
    assert cpu_info("") == {"cpu_model": None, "cpu_isa": []}


def test_environment_is_json_and_records_this_cpu():
    info = json.loads(json.dumps(environment(seed=3)))
    assert info["seed"] == 3 and info["torch_cpu_capability"]
    assert info.get("cpu_isa", []) == cpu_info().get("cpu_isa", [])
