"""Experiment definitions: every validation rule with its message, files, targeting and variants."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.definitions.config import (
    ConfigError,
    ExperimentConfig,
    Selector,
    Targeting,
    load_config,
    parse_config,
)
from experiments.definitions.status import Status
from experiments.variants import (
    DecodingOverrides,
    FimFamily,
    PostProcessOverrides,
    Variant,
    VariantOverrides,
)
from tests.experiment_definitions import arms, config, definition

EXAMPLE = Path(__file__).parent.parent / "examples" / "experiments" / "lora-python.yaml"


def problems(data: Any) -> list[str]:
    """The problem lines of the ConfigError that ``data`` raises."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    header, *lines = str(caught.value).splitlines()
    assert header == "invalid experiment definition:"
    return [line.strip() for line in lines]


def test_a_valid_definition_parses_with_defaults() -> None:
    parsed = config("exp-a")
    assert parsed.key == "exp-a"
    assert parsed.status is Status.DRAFT
    assert parsed.layer == "completion-model"
    assert parsed.traffic == (0.0, 1.0)
    assert parsed.seed is None
    assert parsed.effective_seed == "exp-a"
    assert parsed.bucketing_version == 1
    assert parsed.coverage is None
    assert parsed.initial_coverage == 0.01  # the first stage's
    assert [arm.name for arm in parsed.arms] == ["control", "lora"]
    assert parsed.arms[1].variant.adapter == "python-lora"
    assert parsed.guardrails[0].metric == "latency_p95"
    assert parsed.guardrails[0].margin == 0.1


def test_layer_defaults_to_default() -> None:
    data = definition()
    del data["layer"]
    assert parse_config(data).layer == "default"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"coverage": 0.3}, 0.3),
        ({"coverage": 0.0}, 0.0),
        ({}, 0.01),
        ({"rollout": {"stages": []}}, 1.0),
    ],
)
def test_initial_coverage(fields: dict[str, Any], expected: float) -> None:
    assert config(**fields).initial_coverage == expected


def test_an_explicit_seed_is_used() -> None:
    assert config(seed="shared-seed-2026").effective_seed == "shared-seed-2026"


# --- validation rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((0.5, 0.6), "arms: arm weights must sum to 1, they sum to 1.1"),
        ((0.3, 0.3), "arms: arm weights must sum to 1, they sum to 0.6"),
        ((0.2, 0.3, 0.4), "arms: arm weights must sum to 1, they sum to 0.9"),
        ((1.0, 0.0), "arms.1.weight: Input should be greater than 0"),
        ((0.5, -0.5), "arms.1.weight: Input should be greater than 0"),
        ((0.5, math.nan), "arms.1.weight: Input should be a finite number"),
        ((0.5, math.inf), "arms.1.weight: Input should be a finite number"),
        ((1.5, 0.5), "arms.0.weight: Input should be less than or equal to 1"),
    ],
)
def test_bad_weights_are_rejected_not_repaired(weights: tuple[float, ...], expected: str) -> None:
    assert expected in problems(definition(arms=arms(*weights)))


def test_weights_of_three_thirds_are_accepted() -> None:
    parsed = config(arms=arms(1 / 3, 1 / 3, 1 / 3))
    assert [arm.weight for arm in parsed.arms] == [1 / 3] * 3


def test_at_least_two_arms() -> None:
    assert problems(definition(arms=arms(1.0))) == [
        "arms: an experiment needs at least two arms (a control and a treatment)"
    ]
    assert "arms: an experiment needs at least two arms" in problems(definition(arms=[]))[0]


def test_arm_names_are_unique() -> None:
    twins = [{"name": "control", "weight": 0.5}, {"name": "control", "weight": 0.5}]
    assert problems(definition(arms=twins)) == [
        "arms: arm names must be unique, repeated: ['control']"
    ]


def test_arm_names_are_slugs() -> None:
    bad = [{"name": "Control Arm", "weight": 0.5}, {"name": "t", "weight": 0.5}]
    assert problems(definition(arms=bad))[0].startswith("arms.0.name: String should match")


def test_an_unknown_primary_metric_is_named_with_the_known_ones() -> None:
    [problem] = problems(definition(primary_metrics=["acceptance_rate", "acceptance_rat"]))
    assert problem.startswith("primary_metrics: unknown metric 'acceptance_rat'; known: ")
    assert "acceptance_rate, acceptance_rate_chars" in problem


def test_a_primary_metric_is_required() -> None:
    assert problems(definition(primary_metrics=[])) == [
        "primary_metrics: at least one primary metric is needed"
    ]
    data = definition()
    del data["primary_metrics"]
    assert problems(data) == ["primary_metrics: Field required"]


def test_an_unknown_guardrail_metric_is_named() -> None:
    [problem] = problems(definition(guardrails=[{"metric": "latency_p90", "margin": 0.1}]))
    assert problem.startswith("guardrails.0.metric: unknown metric 'latency_p90'; known: ")


@pytest.mark.parametrize(
    ("margin", "expected"),
    [
        (-0.1, "guardrails.0.margin: Input should be greater than or equal to 0"),
        (1.5, "guardrails.0.margin: Input should be less than or equal to 1"),
    ],
)
def test_guardrail_margins_are_fractions(margin: float, expected: str) -> None:
    data = definition(guardrails=[{"metric": "latency_p95", "margin": margin}])
    assert problems(data) == [expected]


@pytest.mark.parametrize(
    ("coverages", "later", "earlier"),
    [
        ((0.25, 0.05), "0.05", "0.25"),
        ((0.1, 0.5, 0.5), "0.5", "0.5"),
        ((0.5, 1.0, 0.2), "0.2", "1"),
    ],
)
def test_stages_must_increase(coverages: tuple[float, ...], later: str, earlier: str) -> None:
    stages = [{"coverage": c} for c in coverages]
    assert problems(definition(rollout={"stages": stages})) == [
        f"rollout.stages: stages overlap: coverage {later} follows {earlier}; "
        "each stage must cover more traffic than the one before"
    ]


@pytest.mark.parametrize(
    ("coverage", "expected"),
    [
        (0.0, "Input should be greater than 0"),
        (1.5, "Input should be less than or equal to 1"),
    ],
)
def test_stage_coverage_is_in_0_1(coverage: float, expected: str) -> None:
    data = definition(rollout={"stages": [{"coverage": coverage}]})
    assert problems(data) == [f"rollout.stages.0.coverage: {expected}"]


@pytest.mark.parametrize(
    "traffic",
    [[0.5, 0.5], [0.6, 0.4], [-0.1, 0.5], [0.0, 1.5], [0.0, math.nan], [math.inf, 1.0]],
)
def test_an_invalid_traffic_range_is_rejected(traffic: list[float]) -> None:
    [problem] = problems(definition(traffic=traffic))
    assert problem.startswith("traffic: traffic must be [low, high) with 0 <= low < high <= 1")


def test_traffic_is_a_pair() -> None:
    assert problems(definition(traffic=[0.1, 0.2, 0.3]))[0].startswith("traffic: Tuple")


def test_a_valid_traffic_slice() -> None:
    assert config(traffic=[0.5, 1.0]).traffic == (0.5, 1.0)


@pytest.mark.parametrize(
    ("targeting", "location", "both"),
    [
        ({"languages": {"include": ["python"], "exclude": ["python"]}}, "languages", "['python']"),
        # Labels are lower-cased first, so case does not hide the contradiction.
        ({"orgs": {"include": ["Acme", "b"], "exclude": ["acme", "c"]}}, "orgs", "['acme']"),
        ({"ides": {"include": ["vscode", "jetbrains"], "exclude": ["jetbrains", "vscode"]}},
         "ides", "['jetbrains', 'vscode']"),
    ],
)  # fmt: skip
def test_a_value_both_included_and_excluded_is_rejected(
    targeting: dict[str, Any], location: str, both: str
) -> None:
    assert problems(definition(targeting=targeting)) == [
        f"targeting.{location}: {both} both included and excluded"
    ]


@pytest.mark.parametrize("version", [0, 2])
def test_an_unknown_bucketing_version_is_rejected(version: int) -> None:
    assert problems(definition(bucketing_version=version)) == [
        f"bucketing_version: unknown bucketing version {version}"
    ]


TYPO_ARMS = [
    {"name": "control", "weight": 0.5},
    {"name": "t", "weight": 0.5, "variant": {"adaptor": "x"}},
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (definition(primary_metric=["acceptance_rate"]), "primary_metric"),
        (definition(guardrail=[]), "guardrail"),
        (definition(targeting={"language": {"include": ["python"]}}), "targeting.language"),
        (
            definition(targeting={"languages": {"includes": ["python"]}}),
            "targeting.languages.includes",
        ),
        (
            definition(rollout={"stages": [{"coverage": 0.5, "min_user": 10}]}),
            "rollout.stages.0.min_user",
        ),
        (definition(arms=TYPO_ARMS), "arms.1.variant.adaptor"),
    ],
)
def test_a_typo_is_an_extra_field_and_rejected(data: dict[str, Any], expected: str) -> None:
    assert f"{expected}: Extra inputs are not permitted" in problems(data)


def test_a_misspelt_required_field_is_named_twice() -> None:
    data = definition(arms=[{"name": "control", "wieght": 0.5}, {"name": "t", "weight": 0.5}])
    assert problems(data) == [
        "arms.0.weight: Field required",
        "arms.0.wieght: Extra inputs are not permitted",
    ]


def test_every_problem_is_named_at_once() -> None:
    found = problems(
        definition(arms=arms(0.5, 0.6), primary_metrics=["nope"], traffic=[0.5, 0.1], color="red")
    )
    assert [line.split(":")[0] for line in found] == [
        "traffic",
        "arms",
        "primary_metrics",
        "color",
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"key": "Lora Python"}, "key: String should match pattern"),
        ({"key": ""}, "key: String should have at least 1 character"),
        ({"status": "live"}, "status: Input should be 'draft', 'running', 'paused'"),
        ({"coverage": 1.5}, "coverage: Input should be less than or equal to 1"),
        ({"coverage": -0.1}, "coverage: Input should be greater than or equal to 0"),
        ({"seed": ""}, "seed: String should have at least 1 character"),
        ({"layer": "Completion Model"}, "layer: String should match pattern"),
    ],
)
def test_scalar_fields_are_checked(fields: dict[str, Any], expected: str) -> None:
    assert problems(definition(**fields))[0].startswith(expected)


@pytest.mark.parametrize("data", [None, [], "key: x", 42])
def test_a_definition_that_is_not_a_mapping_is_rejected(data: Any) -> None:
    assert problems(data) == [
        "(definition): Input should be a valid dictionary or instance of ExperimentConfig"
    ]


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("90m", 5400.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("45s", 45.0),
        ("1.5h", 5400.0),
        (" 3d ", 259200.0),
        ("0m", 0.0),
        (3600, 3600.0),
        (0.5, 0.5),
    ],
)
def test_durations_are_parsed(written: str | float, seconds: float) -> None:
    data = definition(rollout={"stages": [{"coverage": 0.5, "min_duration_s": written}]})
    assert parse_config(data).rollout.stages[0].min_duration_s == seconds


@pytest.mark.parametrize("written", ["7 days", "1y", "-5m", "h", "5", "", "1e3s", "12H"])
def test_bad_durations_are_rejected_with_the_accepted_forms(written: str) -> None:
    data = definition(rollout={"stages": [{"coverage": 0.5, "min_duration_s": written}]})
    assert problems(data) == [
        f"rollout.stages.0.min_duration_s: duration {written!r}: use a number of seconds or "
        "e.g. 30m, 12h, 7d, 2w"
    ]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (-5, "Input should be greater than or equal to 0"),
        (math.inf, "Input should be a finite number"),
        (math.nan, "Input should be"),  # NaN fails the first check, whichever it is
    ],
)
def test_numeric_durations_must_be_finite_and_not_negative(written: float, expected: str) -> None:
    data = definition(rollout={"stages": [{"coverage": 0.5, "min_duration_s": written}]})
    [problem] = problems(data)
    assert problem.startswith(f"rollout.stages.0.min_duration_s: {expected}")


# --- files ----------------------------------------------------------------------------------

TOML = """\
key = "exp-a"
description = "Python LoRA adapter vs. the base model"
layer = "completion-model"
primary_metrics = ["acceptance_rate", "cpr_120"]

[targeting.languages]
include = ["python"]

[[arms]]
name = "control"
weight = 0.5
description = "base model"

[[arms]]
name = "lora"
weight = 0.5
variant = { adapter = "python-lora" }

[[guardrails]]
metric = "latency_p95"
margin = 0.1

[[rollout.stages]]
coverage = 0.01
min_users = 20
min_duration_s = "1h"

[[rollout.stages]]
coverage = 0.25
min_users = 500
min_duration_s = "2d"

[[rollout.stages]]
coverage = 1.0
"""


@pytest.mark.parametrize("name", ["exp.yaml", "exp.yml", "EXP.YAML"])
def test_yaml_files_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(definition()), encoding="utf-8")
    assert load_config(path) == config()


def test_toml_files_load_to_the_same_definition(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(TOML, encoding="utf-8")
    assert load_config(path) == config()


def test_the_example_loads() -> None:
    example = load_config(EXAMPLE)
    assert example.key == "lora-python"
    assert example.status is Status.RUNNING
    assert example.targeting.languages.include == ("python",)
    assert [(arm.name, arm.weight) for arm in example.arms] == [("control", 0.5), ("lora", 0.5)]
    assert [stage.coverage for stage in example.rollout.stages] == [0.01, 0.05, 0.25, 0.5, 1.0]
    assert [stage.min_duration_s for stage in example.rollout.stages] == [
        3600.0,
        86400.0,
        172800.0,
        259200.0,
        0.0,
    ]
    assert example.initial_coverage == 0.01


def test_unicode_in_a_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    data = definition(description="Pythön — ünïcode ✓")
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert load_config(path).description == "Pythön — ünïcode ✓"


@pytest.mark.parametrize("name", ["exp.json", "exp.txt", "exp"])
def test_other_file_types_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"use a \.yaml, \.yml or \.toml file") as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_a_yaml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("key: exp-a\narms: [\n  {name: control\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML: ")
    assert "line" in message  # the parser's position goes along


def test_a_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('key = "exp-a"\narms = [\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: not valid TOML: ")


def test_a_file_that_is_not_utf8_text_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="cannot read it as UTF-8 text"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read it as UTF-8 text"):
        load_config(tmp_path)  # a directory


def test_an_empty_yaml_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\(definition\): Input should be a valid dictionary"):
        load_config(path)


def test_an_invalid_file_names_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(definition(arms=arms(0.6, 0.6))), encoding="utf-8")
    with pytest.raises(ConfigError, match="arms: arm weights must sum to 1, they sum to 1.2"):
        load_config(path)


# --- targeting ------------------------------------------------------------------------------

ANY = Selector()
PY = Selector(include=("python",))
JAVA = Selector(include=("java",))
PY_JAVA = Selector(include=("python", "java"))
NOT_PY = Selector(exclude=("python",))
NOT_JAVA = Selector(exclude=("java",))
PY_GO_NOT_RUST = Selector(include=("python", "go"), exclude=("rust",))
RUST_NOT_GO = Selector(include=("rust",), exclude=("go",))
GO_RUST_NOT_PY = Selector(include=("go", "rust"), exclude=("python",))


@pytest.mark.parametrize(
    ("selector", "value", "expected"),
    [
        (ANY, "python", True),
        (ANY, "", True),
        (PY, "python", True),
        (PY, "java", False),
        (PY_JAVA, "java", True),
        (PY_JAVA, "rust", False),
        (NOT_PY, "python", False),
        (NOT_PY, "java", True),
        (PY_GO_NOT_RUST, "go", True),
        (PY_GO_NOT_RUST, "rust", False),
        (PY_GO_NOT_RUST, "java", False),
    ],
)
def test_selector_matches(selector: Selector, value: str, expected: bool) -> None:
    assert selector.matches(value) is expected


def test_selector_labels_are_lower_cased_and_stripped() -> None:
    selector = Selector.model_validate({"include": [" Python "], "exclude": ["JAVA"]})
    assert selector == Selector(include=("python",), exclude=("java",))


@pytest.mark.parametrize(
    ("a", "b", "disjoint"),
    [
        (ANY, ANY, False),
        (ANY, PY, False),
        (PY, PY, False),
        (PY, JAVA, True),
        (PY, PY_JAVA, False),
        (PY, NOT_PY, True),
        (PY_JAVA, NOT_PY, False),
        (NOT_PY, NOT_JAVA, False),
        (NOT_PY, ANY, False),
        (PY_GO_NOT_RUST, RUST_NOT_GO, True),
        (PY_GO_NOT_RUST, GO_RUST_NOT_PY, False),  # both take go
        (PY, Selector(include=("java", "go"), exclude=("python",)), True),
        (Selector(include=("python", "go")), Selector(exclude=("python", "go")), True),
        (Selector(include=("python", "go")), Selector(exclude=("python",)), False),
    ],
)  # fmt: skip
def test_selector_disjoint_from(a: Selector, b: Selector, disjoint: bool) -> None:
    assert a.disjoint_from(b) is disjoint
    assert b.disjoint_from(a) is disjoint


UNIVERSE = ("python", "java", "go", "rust")


@st.composite
def selectors(draw: st.DrawFn) -> Selector:
    include = draw(st.sets(st.sampled_from(UNIVERSE)))
    exclude = draw(st.sets(st.sampled_from(UNIVERSE)).map(lambda s: s - include))
    return Selector(include=tuple(sorted(include)), exclude=tuple(sorted(exclude)))


@settings(max_examples=300, deadline=None, database=None)
@given(a=selectors(), b=selectors())
def test_disjoint_means_no_value_matches_both(a: Selector, b: Selector) -> None:
    # "other" stands for every value outside the universe (none is included or excluded).
    values = (*UNIVERSE, "other")
    shared = [value for value in values if a.matches(value) and b.matches(value)]
    assert a.disjoint_from(b) is (not shared)


LANG_PY = Targeting(languages=PY)
LANG_JAVA = Targeting(languages=JAVA)
ACME = Targeting(orgs=Selector(include=("acme",)))
NOT_ACME = Targeting(orgs=Selector(exclude=("acme",)))
PY_ACME = Targeting(languages=PY, orgs=Selector(include=("acme",)))
PY_VSCODE = Targeting(languages=PY, ides=Selector(include=("vscode",)))
PY_JETBRAINS = Targeting(languages=PY, ides=Selector(include=("jetbrains",)))


@pytest.mark.parametrize(
    ("targeting", "request_", "expected"),
    [
        (Targeting(), ("python", "acme", "vscode"), True),
        (LANG_PY, ("python", "acme", "vscode"), True),
        (LANG_PY, ("java", "acme", "vscode"), False),
        (PY_ACME, ("python", "acme", "vscode"), True),
        (PY_ACME, ("python", "globex", "vscode"), False),
        (NOT_ACME, ("python", "acme", "vscode"), False),
        (PY_VSCODE, ("python", "acme", "jetbrains"), False),
        (PY_VSCODE, ("python", "acme", "vscode"), True),
    ],
)
def test_targeting_matches(
    targeting: Targeting, request_: tuple[str, str, str], expected: bool
) -> None:
    language, org, ide = request_
    assert targeting.matches(language=language, org=org, ide=ide) is expected


@pytest.mark.parametrize(
    ("a", "b", "disjoint"),
    [
        (Targeting(), Targeting(), False),
        (Targeting(), LANG_PY, False),
        (LANG_PY, LANG_JAVA, True),
        (LANG_PY, ACME, False),  # Python requests from acme are in both
        (ACME, NOT_ACME, True),
        (PY_ACME, Targeting(languages=PY, orgs=Selector(exclude=("acme",))), True),
        (PY_VSCODE, PY_JETBRAINS, True),  # one dimension apart is enough
        (PY_VSCODE, PY_ACME, False),
    ],
)
def test_targeting_disjoint_from(a: Targeting, b: Targeting, disjoint: bool) -> None:
    assert a.disjoint_from(b) is disjoint
    assert b.disjoint_from(a) is disjoint


# --- variants -------------------------------------------------------------------------------

BASE_VARIANT = Variant.model_validate(
    {
        "model": "bigcode/starcoder2-3b",
        "decoding": {"temperature": 0.2, "max_tokens": 128, "stop": ["\n\n"]},
        "postprocess": {"trim": "block", "max_lines": 8},
    }
)


def test_overrides_merge_nested_settings_field_by_field() -> None:
    overrides = VariantOverrides.model_validate(
        {"decoding": {"temperature": 0.6}, "postprocess": {"trim": "lines"}}
    )
    merged = BASE_VARIANT.with_overrides(overrides)
    assert merged.decoding.temperature == 0.6
    # Set in the base, untouched by the arm: kept.
    assert merged.decoding.max_tokens == 128
    assert merged.decoding.stop == ("\n\n",)
    assert merged.decoding.top_p == 0.95
    assert merged.postprocess.trim == "lines"
    assert merged.postprocess.max_lines == 8
    assert merged.postprocess.drop_if_repeats_suffix is True
    assert merged.model == BASE_VARIANT.model


def test_top_level_overrides_replace_and_the_rest_is_kept() -> None:
    overrides = VariantOverrides(
        adapter="python-lora", fim_template=FimFamily.QWEN25_CODER, context_tokens=4096
    )
    merged = BASE_VARIANT.with_overrides(overrides)
    assert (merged.adapter, merged.fim_template, merged.context_tokens) == (
        "python-lora",
        FimFamily.QWEN25_CODER,
        4096,
    )
    assert merged.decoding == BASE_VARIANT.decoding
    assert merged.postprocess == BASE_VARIANT.postprocess
    assert merged.prefix_share == BASE_VARIANT.prefix_share


def test_no_overrides_is_the_base() -> None:
    assert BASE_VARIANT.with_overrides(VariantOverrides()) == BASE_VARIANT


def test_a_list_override_replaces_the_list() -> None:
    overrides = VariantOverrides(decoding=DecodingOverrides(stop=("\n",)))
    assert BASE_VARIANT.with_overrides(overrides).decoding.stop == ("\n",)


def test_overrides_store_only_what_they_set() -> None:
    overrides = VariantOverrides(
        adapter="python-lora",
        decoding=DecodingOverrides(temperature=0.0),
        postprocess=PostProcessOverrides(max_lines=4),
    )
    assert overrides.as_dict() == {
        "adapter": "python-lora",
        "decoding": {"temperature": 0.0},
        "postprocess": {"max_lines": 4},
    }
    assert VariantOverrides.model_validate(overrides.as_dict()) == overrides


def test_a_merged_variant_is_validated() -> None:
    assert BASE_VARIANT.with_overrides(VariantOverrides(prefix_share=0.5)).prefix_share == 0.5
    with pytest.raises(ValueError, match="temperature"):
        VariantOverrides.model_validate({"decoding": {"temperature": 3.0}})


def test_arm_variants_come_from_the_definition() -> None:
    parsed = config(
        arms=[
            {"name": "control", "weight": 0.5},
            {
                "name": "hot",
                "weight": 0.5,
                "variant": {"decoding": {"temperature": 0.8}, "postprocess": {"trim": "none"}},
            },
        ]
    )
    control, hot = (BASE_VARIANT.with_overrides(arm.variant) for arm in parsed.arms)
    assert control == BASE_VARIANT
    assert hot.decoding.temperature == 0.8
    assert hot.decoding.max_tokens == 128
    assert hot.postprocess.trim == "none"
    assert hot.postprocess.max_lines == 8


def test_an_arm_variant_with_an_invalid_value_is_rejected() -> None:
    bad = [
        {"name": "control", "weight": 0.5},
        {"name": "t", "weight": 0.5, "variant": {"postprocess": {"trim": "sometimes"}}},
    ]
    [problem] = problems(definition(arms=bad))
    assert problem.startswith("arms.1.variant.postprocess.trim: Input should be 'block'")


def test_configs_are_frozen() -> None:
    parsed: ExperimentConfig = config()
    with pytest.raises(ValueError, match="frozen"):
        parsed.key = "other"  # type: ignore[misc]


def test_targeting_ignores_the_case_of_the_request() -> None:
    targeting = config("exp-a").targeting
    assert targeting.matches(language="Python", org="acme", ide="VSCode")
    assert not targeting.matches(language="Java", org="acme", ide="vscode")


def test_a_seed_in_the_layer_namespace_is_rejected() -> None:
    with pytest.raises(ConfigError, match="seed: must not start with 'layer:'"):
        config("exp-a", seed="layer:completion-model")


@pytest.mark.parametrize("field", ["coverage"])
def test_nan_coverage_is_named_as_not_finite(field: str) -> None:
    with pytest.raises(ConfigError, match="coverage: Input should be a finite number"):
        config("exp-a", **{field: float("nan")})
