"""Scenario files: resolution of variants, validation messages, --set overrides, runs."""
from pathlib import Path

import pytest

from simulator.scenario import DEFAULTS, ScenarioError, load_scenario, parse_set

DEMO = Path(__file__).parent.parent / "scenarios" / "demo.toml"


def _write(tmp_path, text, name="scen.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_demo_resolves_its_variants_and_the_compare_pairs():
    scen = load_scenario(DEMO)
    assert scen.name == "demo"
    assert list(scen.variants) == ["pretrained", "pretrained-shuffled", "continuous",
                                   "continuous-shuffled"]
    assert scen.compare == [("continuous", "pretrained"), ("continuous", "continuous-shuffled"),
                            ("pretrained", "pretrained-shuffled")]
    v = scen.variants
    assert (v["pretrained"]["mode"], v["pretrained"]["order"]) == ("frozen", "recorded")
    assert (v["pretrained-shuffled"]["mode"], v["pretrained-shuffled"]["order"]) == ("frozen", "shuffled")
    assert (v["continuous"]["mode"], v["continuous"]["order"]) == ("continuous", "recorded")
    assert (v["continuous-shuffled"]["mode"], v["continuous-shuffled"]["order"]) == ("continuous", "shuffled")
    for cfg in v.values():  # the base reaches every variant, defaults fill the rest
        assert cfg["learning"]["lr"] == 3e-3 and cfg["learning"]["retention"] == 0.9
        assert cfg["encoder"]["alphas"] == [1.0, 10.0, 100.0, 1000.0, 10000.0] and cfg["encoder"]["lags"] == [0, 1, 2, 3, 4, 5]
        assert cfg["data"]["tail_s"] == DEFAULTS["data"]["tail_s"]
        assert cfg["learning"]["mask_prob"] == DEFAULTS["learning"]["mask_prob"]
        assert cfg["model"]["checkpoint"] == "demo/checkpoint"
        assert set(cfg) == set(DEFAULTS)


def test_no_variants_means_one_default_variant(tmp_path):
    scen = load_scenario(_write(tmp_path, "mode = 'frozen'\n"))
    assert list(scen.variants) == ["default"] and scen.variants["default"]["mode"] == "frozen"
    assert scen.compare == []


def test_variants_do_not_share_mutable_defaults(tmp_path):
    scen = load_scenario(_write(tmp_path, "[variants.a]\n[variants.b]\n"))
    scen.variants["a"]["encoder"]["lags"].append(99)
    assert scen.variants["b"]["encoder"]["lags"] == DEFAULTS["encoder"]["lags"]
    assert 99 not in DEFAULTS["encoder"]["lags"]


@pytest.mark.parametrize("text, path", [
    ("[learning]\nlrr = 1e-3\n", "learning.lrr"),
    ("[variants.x.learning]\nlrr = 1e-3\n", "variants.x.learning.lrr"),
    ("moed = 'frozen'\n", "moed"),
    ("[variants.x]\nmoed = 'frozen'\n", "variants.x.moed"),
])
def test_unknown_key_names_its_dotted_path(tmp_path, text, path):
    with pytest.raises(ScenarioError, match=rf"scen\.toml: unknown key '{path}' \(known keys here: ") as err:
        load_scenario(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_unknown_key_lists_the_known_keys(tmp_path):
    with pytest.raises(ScenarioError, match="known keys here: lr, mask_prob, mask_span, offline_epochs, retention, "
                                            "steps_per_sound, weight_decay"):
        load_scenario(_write(tmp_path, "[learning]\nlrr = 1e-3\n"))


@pytest.mark.parametrize("text, message", [
    ("[learning]\nlr = 'fast'\n", "learning.lr must be a number, got 'fast'"),
    ("[variants.x.encoder]\nwarmup = 2.5\n", "variants.x.encoder.warmup must be an integer, got 2.5"),
    ("[encoder]\nlags = [0, 1.5]\n", r"encoder.lags must be a list of integers, got \[0, 1.5\]"),
    ("seeds = [0, 'a']\n", r"seeds must be a list of integers, got \[0, 'a'\]"),
    ("[learning]\nlr = -1e-3\n", "learning.lr must be at least 0, got -0.001"),
    ("[model]\nthreads = 0\n", "model.threads must be at least 1, got 0"),
    ("[encoder]\nalphas = [1.0, -2.0]\n", r"encoder.alphas must hold numbers >= 0, got \[1.0, -2.0\]"),
    ("[encoder]\nalphas = []\n", "encoder.alphas must not be empty"),
    ("[encoder]\nforgetting = 1.5\n", "encoder.forgetting must be at most 1.0, got 1.5"),
    ("[encoder]\nforgetting = 0\n", "encoder.forgetting must be at least 1e-06"),
    ("[encoder]\ndtype = 'float16'\n", "Allowed values are 'float32' and 'float64'"),
    ("[encoder]\nalpha = 10.0\n", "unknown key 'encoder.alpha'.*alphas"),
    ("[learning]\nretention = 1.5\n", "learning.retention must be at most 1.0, got 1.5"),
    ("[learning]\nmask_prob = 2.0\n", "learning.mask_prob must be at most 1.0, got 2.0"),
    ("[learning]\noffline_epochs = 0\n", "learning.offline_epochs must be at least 1, got 0"),
    ("[encoder]\nlags = [-1, 0]\n", r"encoder.lags must hold numbers >= 0, got \[-1, 0\]"),
    ("[encoder]\nlags = [0, 1, 1]\n", r"encoder.lags repeats a value, got \[0, 1, 1\]"),
    ("[encoder]\nlayers = []\n", "encoder.layers must not be empty"),
    ("[variants.x]\nseeds = []\n", "variants.x.seeds must not be empty"),
    ("learning = 3\n", "learning must be a table"),
    ("[variants]\nx = 3\n", "variants.x must be a table"),
    ("[encoder]\ncomponents = 2.5\n", r"/scen\.toml: encoder\.components must be an integer, "
                                     r"got 2\.5$"),
    ("[encoder]\ncomponents = -1\n", r"/scen\.toml: encoder\.components must be at least 0, got -1$"),
    ("[variants.x.encoder]\ncomponents = true\n",
     r"/scen\.toml: variants\.x\.encoder\.components must be an integer, got True$"),
])
def test_wrong_type_names_the_path(tmp_path, text, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(_write(tmp_path, text))


def test_scalars_promote_to_lists_and_ints_to_floats(tmp_path):
    cfg = load_scenario(_write(tmp_path, "seeds = 3\n[learning]\nlr = 1\n[data]\nsubjects = 'sub-01'\n"
                                         "[encoder]\nalphas = [1, 10]\n")).variants["default"]
    assert cfg["seeds"] == [3] and cfg["data"]["subjects"] == ["sub-01"]
    assert cfg["encoder"]["alphas"] == [1.0, 10.0]
    assert all(isinstance(a, float) for a in cfg["encoder"]["alphas"])
    assert cfg["learning"]["lr"] == 1.0 and isinstance(cfg["learning"]["lr"], float)


@pytest.mark.parametrize("text, message", [
    ("mode = 'frozn'\n", r"invalid value for 'mode'\. Allowed values are 'frozen', 'continuous', "
                         r"'reset', 'random', 'offline', 'brain-aligned' and 'brain-continuous', but got 'frozn' "
                         r"instead\."),
    ("[variants.x]\norder = 'shuffle'\n",
     r"invalid value for 'variants\.x\.order'\. Allowed values are 'recorded', 'shuffled', "
     r"'reversed' and 'blocked', but got 'shuffle' instead\."),
    ("[model]\nautocast = 'float16'\n", r"invalid value for 'model\.autocast'\. Allowed values "
                                         r"are 'none' and 'bfloat16', but got 'float16' instead\."),
])
def test_invalid_mode_or_order_lists_the_allowed_values(tmp_path, text, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(_write(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ("compare = [['a', 'nope']]\n[variants.a]\n", r"compare names variant 'nope', but the variants are a"),
    ("compare = [['a']]\n[variants.a]\n", r"'compare' must be a list of \[a, b\] pairs"),
    ("variants = {}\n", "'variants' must be a table of named variants"),
])
def test_bad_variants_or_compare(tmp_path, text, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(_write(tmp_path, text))


@pytest.mark.parametrize("assignment, keys, value", [
    ("learning.lr=1e-3", ["learning", "lr"], 1e-3),
    ("encoder.alphas = [1, 10.0]", ["encoder", "alphas"], [1, 10.0]),
    ("encoder.lags=[0, 1, 2]", ["encoder", "lags"], [0, 1, 2]),
    ("seeds=3", ["seeds"], 3),
    ("order='shuffled'", ["order"], "shuffled"),
    ("order=shuffled", ["order"], "shuffled"),  # not TOML: taken as a string
    ("model.checkpoint=/data/ckpt", ["model", "checkpoint"], "/data/ckpt"),
    ("data.subjects=[\"sub-01\", \"sub-02\"]", ["data", "subjects"], ["sub-01", "sub-02"]),
    ("description=a=b", ["description"], "a=b"),
    ("variants.x.learning.lr=2e-4", ["variants", "x", "learning", "lr"], 2e-4),
])
def test_parse_set(assignment, keys, value):
    got_keys, got = parse_set(assignment)
    assert got_keys == keys and got == value and type(got) is type(value)


def test_parse_set_needs_an_equals_sign():
    with pytest.raises(ScenarioError, match=r"--set expects dotted.key=value, got 'learning.lr'"):
        parse_set("learning.lr")


def test_set_overrides_the_base_and_one_variant():
    scen = load_scenario(DEMO, ["learning.lr=1e-3", "variants.continuous.learning.steps_per_sound=5",
                                "encoder.lags=[0, 1]", "model.checkpoint=/data/ckpt"])
    for name, cfg in scen.variants.items():
        assert cfg["learning"]["lr"] == 1e-3
        assert cfg["encoder"]["lags"] == [0, 1]
        assert cfg["model"]["checkpoint"] == "/data/ckpt"
        assert cfg["learning"]["steps_per_sound"] == (5 if name == "continuous" else 3)


def test_set_is_validated_like_the_file():
    with pytest.raises(ScenarioError, match="unknown key 'learning.lrr'"):
        load_scenario(DEMO, ["learning.lrr=1e-3"])
    with pytest.raises(ScenarioError, match="invalid value for 'mode'"):
        load_scenario(DEMO, ["mode=sleepy"])
    with pytest.raises(ScenarioError, match=r"--set learning\.lr\.x=1: 'lr' is not a table"):
        load_scenario(DEMO, ["learning.lr.x=1"])


def test_set_does_not_change_the_file(tmp_path):
    path = _write(tmp_path, "[learning]\nlr = 1e-3\n")
    load_scenario(path, ["learning.lr=5e-3"])
    assert load_scenario(path).variants["default"]["learning"]["lr"] == 1e-3


def test_frozen_in_recorded_order_collapses_seeds(tmp_path):
    text = """seeds = [0, 1, 2]
[variants.frozen]
mode = "frozen"
[variants.frozen-shuffled]
mode = "frozen"
order = "shuffled"
[variants.continuous]
"""
    runs = load_scenario(_write(tmp_path, text)).runs(["sub-01", "sub-02"])
    ids = [r.run_id for r in runs]
    assert ids == ["frozen/sub-01/seed-0", "frozen/sub-02/seed-0",
                   *[f"frozen-shuffled/{s}/seed-{k}" for s in ("sub-01", "sub-02") for k in range(3)],
                   *[f"continuous/{s}/seed-{k}" for s in ("sub-01", "sub-02") for k in range(3)]]
    assert all(r.config["mode"] == "frozen" for r in runs if r.variant.startswith("frozen"))


def test_runs_of_chosen_subjects(tmp_path):
    scen = load_scenario(_write(tmp_path, "[data]\nsubjects = ['sub-02']\n"))
    assert [r.run_id for r in scen.runs(["sub-01", "sub-02"])] == ["default/sub-02/seed-0"]


def test_unknown_subject_is_refused(tmp_path):
    scen = load_scenario(_write(tmp_path, "[variants.x.data]\nsubjects = ['sub-01', 'sub-99']\n"))
    with pytest.raises(ScenarioError, match=r"variants\.x\.data\.subjects names \['sub-99'\], but the "
                                            r"recording has subjects \['sub-01'\]"):
        scen.runs(["sub-01"])


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match=r"scenario file '.*nope\.toml' does not exist"):
        load_scenario(tmp_path / "nope.toml")


def test_invalid_toml(tmp_path):
    with pytest.raises(ScenarioError, match=r"scen\.toml: not valid TOML \(.*line 2") as err:
        load_scenario(_write(tmp_path, "mode = 'frozen'\nlearning lr = 3\n"))
    assert "\n" not in str(err.value)


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_scenario_loads_and_says_its_purpose(path):
    assert path.read_text().startswith(f"# {path.stem}: ")
    scen = load_scenario(path)
    assert scen.variants and all(a in scen.variants and b in scen.variants for a, b in scen.compare)


def test_encoder_components_defaults_to_0_and_reaches_the_services_open(tmp_path):
    from simulator.run import open_encoder

    assert DEFAULTS["encoder"]["components"] == 0
    cfg = load_scenario(_write(tmp_path, "[variants.p.encoder]\ncomponents = 256\n"
                                         "[variants.full]\n")).variants
    assert cfg["full"]["encoder"]["components"] == 0

    class Client:  # what open_encoder asks of the service, without one
        def open(self, *args, **options):
            self.options = options
            return 0

    client = Client()
    open_encoder(client, "run", ["cnn"], 10, 4, cfg["p"]["encoder"])
    assert client.options["components"] == 256


GRID = """
compare = [["continuous,*", "pretrained"]]
[variants.pretrained]
mode = "frozen"
[variants.continuous.grid]
"learning.lr" = [1e-5, 1e-4]
learning.steps_per_sound = [1, 3]
seed = [0, 1]
"""


def test_a_variants_grid_is_its_cartesian_product_named_after_each_point(tmp_path):
    scen = load_scenario(_write(tmp_path, GRID))
    assert list(scen.variants) == [
        "pretrained", "continuous,lr=1e-05,steps_per_sound=1", "continuous,lr=1e-05,steps_per_sound=3",
        "continuous,lr=0.0001,steps_per_sound=1", "continuous,lr=0.0001,steps_per_sound=3"]
    point = scen.variants["continuous,lr=0.0001,steps_per_sound=3"]
    assert (point["learning"]["lr"], point["learning"]["steps_per_sound"]) == (1e-4, 3)
    assert point["seeds"] == [0, 1]  # seed is a replicate axis: more runs, not more variants
    assert scen.variants["pretrained"]["seeds"] == [0]
    assert scen.compare == [(v, "pretrained") for v in list(scen.variants)[1:]]
    runs = scen.runs(["sub-01"])
    assert len(runs) == 1 + 4 * 2 and len({r.run_id for r in runs}) == len(runs)


def test_a_top_level_grid_applies_to_every_variant_and_names_them_alone(tmp_path):
    scen = load_scenario(_write(tmp_path, "[grid]\norder = ['recorded', 'reversed']\n"
                                          "subject = ['sub-01']\n"))
    assert list(scen.variants) == ["order=recorded", "order=reversed"]
    assert scen.variants["order=reversed"]["data"]["subjects"] == ["sub-01"]
    both = load_scenario(_write(tmp_path, "[grid]\nmode = ['frozen', 'continuous']\n"
                                          "[variants.a]\n[variants.b]\norder = 'shuffled'\n"))
    assert list(both.variants) == ["a,mode=frozen", "a,mode=continuous", "b,mode=frozen",
                                   "b,mode=continuous"]
    assert both.variants["b,mode=frozen"]["order"] == "shuffled"


def test_grid_over_list_keys_and_order_seeds(tmp_path):
    scen = load_scenario(_write(tmp_path, "[grid]\nmodel.trainable_layers = "
                                          "[['all'], 'layer_4', ['layer_3', 'layer_4']]\n"
                                          "order_seed = [1, 2]\n"))
    assert list(scen.variants)[:3] == ["trainable_layers=all,order_seed=1",
                                       "trainable_layers=all,order_seed=2",
                                       "trainable_layers=layer_4,order_seed=1"]
    assert scen.variants["trainable_layers=layer_3+layer_4,order_seed=2"]["model"][
        "trainable_layers"] == ["layer_3", "layer_4"]
    assert DEFAULTS["order_seed"] == -1 and DEFAULTS["model"]["trainable_layers"] == ["all"]


@pytest.mark.parametrize("text, message", [
    ("[grid]\n'learning.lr' = [1e-4, 'x']\n", r"grid\.learning\.lr must be a number, got 'x'"),
    ("[variants.a.grid]\nlearning.lr = [1e-4, 'x']\n",
     r"variants\.a\.grid\.learning\.lr must be a number, got 'x'"),
    ("[grid]\nlearning.lr = 3\n", r"grid\.learning\.lr must be a non-empty list of values, got 3"),
    ("[grid]\nlearning.lr = []\n", r"grid\.learning\.lr must be a non-empty list"),
    ("[grid]\nlearning.lr = [1e-4, 1e-4]\n", r"grid\.learning\.lr repeats a value"),
    ("[grid]\nlearning.lrr = [1e-4]\n", r"unknown key 'grid\.learning\.lrr'"),
    ("[grid]\norder = ['sideways']\n", r"invalid value for 'grid\.order'"),
    ("[grid]\norder = ['reversed']\n[variants.a.grid]\norder = ['recorded']\n",
     r"the grid sets \['order'\] twice"),
    ("[grid]\n'data.session' = ['0', '1']\n", r"data\.session differs between variants"),
    ("[variants.a]\n[variants.b.data]\ntail_s = 3.0\n",
     r"data\.tail_s differs between variants \(a: 6\.0, b: 3\.0\); every variant replays the same "
     r"inputs"),
    ("[variants.'a/b']\n", r"variant name 'a/b' may not contain '/'"),
    ("compare = [['x*', 'a']]\n[variants.a]\n", r"compare names variant 'x\*', but the variants are a"),
])
def test_grid_errors_name_the_key_path(tmp_path, text, message):
    with pytest.raises(ScenarioError, match=message) as err:
        load_scenario(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def _leaves(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_docs_scenarios_md_gives_every_key_with_its_default():
    import tomllib

    text = (Path(__file__).parent.parent / "docs" / "scenarios.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3 and cells[1].startswith("`"):
            rows[cells[0].strip("`")] = tomllib.loads(f"v = {cells[1].strip('`')}")["v"]
    for key, default in _leaves(DEFAULTS):
        assert key in rows, f"docs/scenarios.md has no row for {key}"
        assert rows[key] == default, f"docs/scenarios.md gives {key} the default {rows[key]!r}"
    assert rows["compare"] == []


def test_a_grid_of_replicates_alone_keeps_the_default_variant(tmp_path):
    scen = load_scenario(_write(tmp_path, "[grid]\nseed = [0, 1]\n"))
    assert list(scen.variants) == ["default"] and scen.variants["default"]["seeds"] == [0, 1]
