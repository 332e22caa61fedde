"""The configs (every field documented, every model switch recorded, variants) and the start-up check."""

import json
import re

import ml_collections
import pytest
from flax import nnx

from coreecho_jax import cli, config_check, configs
from coreecho_jax.configs import camus, demo, echonet
from coreecho_jax.data.transfer.camus import CAMUS_MEAN, CAMUS_STD
from coreecho_jax.errors import ConfigError
from coreecho_jax.models import build_model, rngs, uniformer
from coreecho_jax.train import workdir as workdir_lib
from tests.paths import REPO


def _set(config: ml_collections.ConfigDict, name: str, value) -> ml_collections.ConfigDict:
    *parents, leaf = name.split(".")
    node = config
    for part in parents:
        node = node[part]
    with node.ignore_type():
        node[leaf] = value
    return config


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


# ------------------------------------------------------------------------------------------- the files
def test_every_field_of_the_paper_config_has_a_comment():
    source = (REPO / "configs" / "echonet.py").read_text().splitlines()
    assignments = [line for line in source if re.match(r"\s*c\.[\w.]+ = ", line)]
    leaves = _leaves(echonet.get_config())
    assert len(leaves) == len([a for a in assignments if "ConfigDict()" not in a])
    undocumented = [a.strip() for a in assignments if "ConfigDict()" not in a and "  # " not in a]
    assert not undocumented


def test_dead_fields_are_gone_and_new_switches_are_there():
    config = echonet.get_config()
    assert "name" not in config.data
    assert config.data.channels == 3


def test_the_config_records_every_model_switch_at_the_models_defaults():
    model = echonet.get_config().model
    defaults = uniformer.UniFormerConfig()
    for name in ("drop_path", "dropout_rng", "unbiased_running_var"):
        assert model[name] == getattr(defaults, name), name
    assert model.rng_impl == "rbg" == rngs.make_rngs.__kwdefaults__["impl"]
    # every field of the model section reaches build_model (an unknown one would raise)
    quick = demo.get_config("quick")
    abstract = nnx.eval_shape(lambda: build_model(quick.model, seed=0))
    assert abstract.encoder.config.drop_path == quick.model.drop_path


def _parse_config_flag(value: str, *overrides: str) -> ml_collections.ConfigDict:
    """``--config=<value> [--config.<name>=<value> ...]`` parsed as the commands parse it."""
    return cli.parse(["data", f"--config={value}", "--workdir=w", *overrides]).config


def test_quick_variant_through_the_flag_syntax_is_small():
    quick = _parse_config_flag(f"{REPO / 'configs' / 'demo.py'}:quick")
    full = _parse_config_flag(str(REPO / "configs" / "demo.py"))
    assert quick.data.synthetic.n_videos < full.data.synthetic.n_videos
    assert quick.data.frames * quick.data.image_size**2 < full.data.frames * full.data.image_size**2
    assert quick.stage1.epochs + quick.stage2.epochs <= 4
    assert quick.model.preset == "tiny"
    assert sorted(_leaves(quick)) == sorted(_leaves(full))  # a variant changes values, never the fields


def _command_line_value(value) -> str:
    """A config value as a user types it after ``--config.<name>=``."""
    return (
        str(value).lower()
        if isinstance(value, bool)
        else repr(value)
        if isinstance(value, tuple)
        else str(value)
    )


@pytest.mark.parametrize("name", ["echonet", "demo", "camus", "camus_demo", "hmcqu", "hmcqu_demo"])
def test_every_field_of_every_shipped_config_can_be_overridden_on_the_command_line(name):
    # ml_collections refuses to override a list field (data.mean / data.std were lists): every leaf, set
    # on the command line to its own value, must parse and give the same config back
    file = REPO / "configs" / f"{name}.py"
    config = _parse_config_flag(str(file))
    overrides = [f"--config.{leaf}={_command_line_value(config[leaf])}" for leaf in _leaves(config)]
    assert _parse_config_flag(str(file), *overrides).to_dict() == config.to_dict()


def test_normalisation_overrides_in_both_tuple_syntaxes():
    camus = str(REPO / "configs" / "camus.py")
    config = _parse_config_flag(camus, "--config.data.mean=0.1,0.2,0.3", "--config.data.std=(1.5, 2, 3.5)")
    assert config.data.mean == (0.1, 0.2, 0.3) and config.data.std == (1.5, 2, 3.5)
    assert config_check.config_problems(config) == []
    one = _parse_config_flag(str(REPO / "configs" / "hmcqu.py"), "--config.data.mean=40.5")
    assert one.data.mean == (40.5,) and config_check.config_problems(one) == []
    two = _parse_config_flag(camus, "--config.data.mean=1,2")
    assert config_check.config_problems(two) == [
        "data.mean = (1, 2): must be 1 or 3 numbers (0..255 scale), e.g. (40.9, 40.9, 40.9)"
    ]


def test_a_run_saved_with_list_normalisation_matches_the_tuple_config():
    # config.json of runs started when data.mean / data.std were lists: the same run, resumable
    config = camus.get_config()
    saved = workdir_lib.config_record(config)
    saved["data"]["mean"], saved["data"]["std"] = [CAMUS_MEAN] * 3, [CAMUS_STD] * 3
    assert isinstance(config.data.mean, tuple)
    assert (
        workdir_lib.config_differences(json.loads(json.dumps(saved)), workdir_lib.config_record(config)) == {}
    )
    saved["data"]["std"] = [CAMUS_STD] * 2 + [1.0]
    assert workdir_lib.config_differences(saved, workdir_lib.config_record(config)) == {
        "data.std": ([CAMUS_STD] * 2 + [1.0], [CAMUS_STD] * 3)
    }


def test_an_unknown_variant_names_the_known_ones():
    with pytest.raises(ConfigError, match="known: demo:quick"):
        demo.get_config("quik")
    with pytest.raises(ConfigError, match="unknown variant"):
        echonet.get_config("quick")


# ------------------------------------------------------------------------------------------- the check
@pytest.mark.parametrize("get", [echonet.get_config, demo.get_config, lambda: demo.get_config("quick")])
def test_shipped_configs_pass(get):
    config_check.check_config(get())


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("stage1.epochs", 0, "stage1.epochs = 0: must be an integer >= 1"),
        ("stage2.epochs", -1, "stage2.epochs = -1"),
        ("stage1.lr", -0.1, "stage1.lr = -0.1: must be > 0"),
        ("stage2.lr", 0.0, "stage2.lr = 0.0: must be > 0"),
        ("stage1.batch_size", 0, "stage1.batch_size = 0"),
        ("stage2.batch_size", 1, "stage2.batch_size = 1: must be an integer >= 2"),
        ("eval.batch_size", 0, "eval.batch_size = 0"),
        ("eval.n_clips", 0, "eval.n_clips = 0"),
        ("data.frames", 0, "data.frames = 0"),
        ("data.channels", 2, "data.channels = 2: must be one of 1, 3"),
        ("data.image_size", 24, "data.image_size = 24: the UniFormer downsamples 32x"),
        ("loss.temperature", 0.0, "loss.temperature = 0.0"),
        ("loss.implementation", "fast", "loss.implementation = 'fast'"),
        ("model.dropout", 1.5, "model: dropout and drop_path must be in [0, 1)"),
        ("model.preset", "huge", "model: unknown UniFormer preset 'huge'"),
        ("model.attention", "cudnn", "model: attention='cudnn' needs a CUDA GPU"),
        ("model.rng_impl", "philox", "model.rng_impl = 'philox'"),
        ("model.head_dropout", -0.1, "model.head_dropout = -0.1: must be in [0, 1)"),
        ("run.stages", "1,3", "run.stages = '1,3': must list 1 and/or 2"),
        ("run.stages", "2", "run.stages = '2' needs model.init_from"),
        ("seed", -1, "seed = -1"),
        ("stage1.lr", float("nan"), "stage1.lr = nan: must be > 0"),
    ],
)
def test_each_bad_field_gets_one_line_naming_it(field, value, expected):
    config = _set(demo.get_config("quick"), field, value)
    problems = config_check.config_problems(config)
    assert problems == [p for p in problems if expected in p] and len(problems) == 1, problems
    with pytest.raises(ConfigError) as info:
        config_check.check_config(config)
    assert str(info.value) == problems[0]


def test_several_problems_are_reported_together_one_line_each():
    config = demo.get_config("quick")
    config.stage1.epochs = 0
    config.stage1.lr = -1.0
    config.eval.n_clips = 0
    with pytest.raises(ConfigError) as info:
        config_check.check_config(config)
    lines = str(info.value).splitlines()
    assert [line.split(" = ")[0] for line in lines] == ["stage1.epochs", "stage1.lr", "eval.n_clips"]


def test_a_missing_field_is_named():
    config = demo.get_config("quick")
    del config.eval["n_clips"]
    assert config_check.config_problems(config) == [
        "eval.n_clips: missing (every run config has it; see configs/echonet.py)"
    ]


def test_stage_two_alone_with_weights_to_start_from_is_fine():
    config = demo.get_config("quick")
    config.run.stages = "2"
    config.model.init_from = "/runs/stage1"
    assert config_check.config_problems(config) == []
    assert config_check.parse_stages(" 2, 1") == [1, 2]


def test_unknown_overrides_are_named_with_a_suggestion():
    config = demo.get_config()
    problems = config_check.override_problems(config, ["stage1.lr", "stage1.lrr", "nope.x", "eval.seed.x"])
    assert problems[0] == "--config.stage1.lrr: no such config field; did you mean stage1.lr?"
    assert problems[1].startswith("--config.nope.x: no such config field; the config has data, eval")
    assert problems[2].startswith("--config.eval.seed.x: no such config field")
    assert len(problems) == 3


def test_a_config_that_is_not_a_configdict_is_one_line():
    assert config_check.config_problems({"seed": 0}) == [
        "the config must be an ml_collections.ConfigDict, got dict"
    ]


def test_transfer_preparation_switches_are_checked_before_any_data_work():
    """A bad ``data.spatial`` / ``time_sampling`` / ``cycle_frames`` is one line at the config check (it
    used to surface only when the clips were prepared), and the choices are the data code's own."""
    from coreecho_jax.configs import hmcqu
    from coreecho_jax.data.transfer import cycles
    from coreecho_jax.data.transfer import hmcqu as hmcqu_data

    choices = config_check.TRANSFER_OPTIONAL_CHOICES
    assert choices["data.spatial"] == cycles.SPATIAL
    assert choices["data.time_sampling"] == cycles.TIME_SAMPLING
    assert choices["data.cycle_frames"] == hmcqu_data.CYCLE_FRAMES
    config = hmcqu.get_config()
    config.data.spatial = "bicubic"
    config.data.cycle_frames = "all"
    with pytest.raises(ConfigError) as e:
        config_check.check_config(config)
    lines = str(e.value).splitlines()
    assert "data.spatial = 'bicubic': must be one of 'ref21', 'area'" in lines
    assert "data.cycle_frames = 'all': must be one of 'ref21', 'inclusive'" in lines
    config_check.check_config(camus.get_config())  # CAMUS has none of them: the CycleSpec defaults


# ------------------------------------------------------------------------------------ transfer configs
#: The data fields only one dataset's code reads (transfer.data, cycle_frames; the synthetic
#: HMC-QU writer): CAMUS's split files, HMC-QU's subset, fold file and seed, [21]'s preparation switches.
CAMUS_ONLY = {"data.split_dir"}
HMCQU_ONLY = {
    *("data.subset", "data.fold_file", "data.fold_seed"),
    *("data.cycle_frames", "data.spatial", "data.time_sampling"),
    *("data.synthetic.mi_segments", "data.synthetic.mi_segment_motion"),
}


@pytest.mark.parametrize("demo_too", [False, True])
def test_each_transfer_config_holds_only_its_own_fields(demo_too):
    from coreecho_jax.configs import camus_demo, hmcqu, hmcqu_demo

    for variant in ("", "quick") if demo_too else ("",):
        camus_config = camus_demo.get_config(variant) if demo_too else camus.get_config()
        hmcqu_config = hmcqu_demo.get_config(variant) if demo_too else hmcqu.get_config()
        camus_fields, hmcqu_fields = set(_leaves(camus_config)), set(_leaves(hmcqu_config))
        assert camus_fields - hmcqu_fields == CAMUS_ONLY
        assert hmcqu_fields - camus_fields == HMCQU_ONLY
        for config in (camus_config, hmcqu_config):
            assert config_check.config_problems(config) == []


def test_the_fields_both_transfer_configs_have_come_from_the_base():
    """configs/transfer.py holds each shared field once: the fields both configs have are its fields, at
    its values, except the values each dataset gives it (which differ between the two)."""
    from coreecho_jax.configs import hmcqu, transfer

    camus_config, hmcqu_config = camus.get_config(), hmcqu.get_config()
    shared = set(_leaves(camus_config)) & set(_leaves(hmcqu_config))
    base = transfer.transfer_config(
        "camus",
        **dict(view="", folds="", n_folds=0, frames=0, image_size=0, crop_fraction=0.0),
        **dict(mean=(), std=(), n_videos=0),
    )
    assert set(_leaves(base)) == shared
    given = {"task", "data.view", "data.folds", "data.n_folds", "data.frames", "data.image_size"}
    given |= {"data.crop_fraction", "data.mean", "data.std", "data.synthetic.n_videos"}
    for name in sorted(shared - given):
        assert camus_config[name] == hmcqu_config[name] == base[name], name
    for name in sorted(given):
        assert camus_config[name] != hmcqu_config[name], name


# ------------------------------------------------------------------------------------------- the loader
def test_the_built_in_names_are_the_config_files():
    assert configs.names() == [
        "camus",
        "camus_demo",
        "custom",
        "custom_demo",
        "demo",
        "echonet",
        "hmcqu",
        "hmcqu_demo",
    ]
    assert (REPO / "configs").resolve() == configs.FOLDER  # the checkout's configs/ is the package's


@pytest.mark.parametrize(
    "spec",
    ["demo:quick", "configs/demo.py:quick", str(REPO / "coreecho_jax" / "configs" / "demo.py") + ":quick"],
)
def test_a_name_and_a_path_give_the_same_config(spec, monkeypatch):
    monkeypatch.chdir(REPO)
    assert configs.load(spec).to_dict() == demo.get_config("quick").to_dict()


def test_names_load_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert configs.load("camus").to_dict() == camus.get_config().to_dict()
    assert configs.load("echonet:").to_dict() == echonet.get_config().to_dict()  # an empty variant: none


def test_a_file_of_ones_own_with_a_variant(tmp_path):
    own = tmp_path / "own.py"
    own.write_text(
        "from coreecho_jax.configs import demo\n\n\n"
        "def get_config(arg=None):\n"
        "    c = demo.get_config('quick')\n"
        "    c.seed = 7 if arg == 'seven' else 1\n"
        "    return c\n"
    )
    assert configs.load(str(own)).seed == 1
    assert configs.load(f"{own}:seven").seed == 7


@pytest.mark.parametrize(
    "spec, message",
    [
        ("demi", "--config=demi: no built-in config 'demi' (built-in: camus, camus_demo, custom, custom_demo, "
         "demo, echonet, hmcqu, hmcqu_demo; or give a path to a .py file); did you mean demo?"),
        ("demo:slow", "--config=demo:slow: unknown variant 'slow'; known: demo:quick"),
        ("echonet:quick", "--config=echonet:quick: unknown variant 'quick'; known: none"),
        ("missing.py", "--config=missing.py: no such file (expected a Python file such as configs/demo.py, or a "
         "built-in name: camus, camus_demo, custom, custom_demo, demo, echonet, hmcqu, hmcqu_demo)"),
    ],
)  # fmt: skip
def test_loader_errors_are_one_line(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        configs.load(spec)
    assert str(info.value) == message


def test_a_file_that_is_no_config_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not python")
    with pytest.raises(ConfigError, match="not a Python file"):
        configs.load(str(tmp_path / "notes.txt"))
    (tmp_path / "none.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match=r"none.py has no get_config\(\)"):
        configs.load(str(tmp_path / "none.py"))
    (tmp_path / "dict.py").write_text("def get_config():\n    return {'seed': 0}\n")
    with pytest.raises(ConfigError, match=r"get_config\(\) returned dict, not a ConfigDict"):
        configs.load(str(tmp_path / "dict.py"))


def test_a_variant_follows_the_last_colon_after_the_file_name():
    assert configs.split_spec("demo:quick") == ("demo", "quick")
    assert configs.split_spec("configs/demo.py") == ("configs/demo.py", None)
    assert configs.split_spec("C:\\configs\\own.py") == ("C:\\configs\\own.py", None)
    assert configs.split_spec("C:\\configs\\own.py:quick") == ("C:\\configs\\own.py", "quick")


def test_field_comments_come_from_the_last_file_that_comments_the_field():
    comments = configs.field_comments("hmcqu_demo:quick")
    assert comments["data.frames"] == "frames of the clip the cycle is resampled to"  # transfer.py's
    assert (
        comments["model.preset"] == "as configs/demo.py: depth [1,1,1,1], dims [16,32,64,128]"
    )  # camus_demo
    assert comments["stage1.lr"] == "AdamW learning rate (official --learning_rate 1e-4)"  # echonet.py's
