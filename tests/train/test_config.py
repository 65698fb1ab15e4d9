"""Config loading: YAML + dotted overrides, one validation pass, errors that name the field."""

from __future__ import annotations

import pytest

from mm_gmpo.cli import main
from mm_gmpo.resources import configs_dir
from mm_gmpo.train.config import ConfigError, describe, load_config


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("optim:\n  lr: 3.0e-6\nloss:\n  name: gmpo\n  clip_high: 0.3\n")
    cfg = load_config(path, ["optim.lr=1e-6", "loss.name=grpo", "rollout.n=4"])
    assert cfg.optim.lr == 1e-6  # "1e-6" is a string to YAML 1.1; it must still become a float
    assert cfg.loss.name == "grpo"
    assert cfg.loss.clip_high == 0.3
    assert cfg.rollout.n == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", r"unknown config field optim\.lrr \(did you mean optim\.lr\?\)"),
        ("optim.lr=fast", r"optim\.lr: expected float"),
        ("train.steps=1.5", r"train\.steps: expected int"),
        ("loss.name=ppo", r"loss\.name: 'ppo' is not one of"),
        ("loss.clip_low=-0.1", r"loss\.clip_low: must be >= 0"),
        ("rollout.top_p=1.5", r"rollout\.top_p"),
        ("data.on_bad_record=ignore", r"data\.on_bad_record"),
        ("train.engine=fsdp", r"train\.engine"),
        ("nonsense", r"must look like section\.field=value"),
        ("data.chat_template=/no/such/template.jinja", r"data\.chat_template: no such file"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_shipped_configs_validate():
    paths = sorted(configs_dir().glob("*.yaml"))
    assert {"demo_text.yaml", "demo_vl.yaml", "paper_text_gmpo.yaml", "paper_text_r1distill_gmpo.yaml"} <= {
        p.name for p in paths
    }
    for path in paths:
        load_config(path)


def test_chat_template_is_a_text_path_file(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages[0].content }}")
    assert load_config(None, [f"data.chat_template={template}"]).data.chat_template == str(template)
    with pytest.raises(ConfigError, match=r"data\.chat_template: only the text path reads it"):
        load_config(None, ["modality=vl", "model.path=tiny:qwen2_5_vl", f"data.chat_template={template}"])


def test_every_field_has_help():
    for line in describe().splitlines():
        assert line.split("#", 1)[1].strip(), line


def test_cli_reports_config_errors_without_a_traceback(capsys):
    assert main(["train", str(configs_dir() / "demo_text.yaml"), "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_base_seed_fixes_the_start_but_not_the_rl_seed(tmp_path):
    """Several RL seeds from one starting policy: same tiny weights and data, own sampling seed."""
    from safetensors.torch import load_file

    from mm_gmpo.train.build import load_split, resolve_model_path

    def start(seed, base_seed):
        out = tmp_path / f"s{seed}_b{base_seed}"
        cfg = load_config(
            None,
            [f"train.seed={seed}", f"train.output_dir={out}", "data.synthetic_train_size=50"]
            + ([f"train.base_seed={base_seed}"] if base_seed is not None else []),
        )
        weights = load_file(str(resolve_model_path(cfg) / "model.safetensors"))
        return cfg, weights, load_split("synthetic:largest", cfg, "train")

    cfg_a, w_a, rec_a = start(1, 0)
    cfg_b, w_b, rec_b = start(2, 0)
    _, w_own, rec_own = start(2, None)
    assert (cfg_a.train.seed, cfg_a.train.start_seed) == (1, 0)
    assert rec_a == rec_b and rec_own != rec_b
    assert w_a.keys() == w_b.keys()
    assert all(w_a[k].equal(w_b[k]) for k in w_a)
    assert not all(w_own[k].equal(w_b[k]) for k in w_b)
