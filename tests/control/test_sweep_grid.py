"""The grid file: base spec, dotted run-spec paths, the cartesian product, one-line errors."""

from __future__ import annotations

import pytest

from common.errors import ConfigError, UserError
from control.sweep_grid import MAX_POINTS, load_grid


def write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_points_are_the_cartesian_product_in_the_files_key_order(tmp_path):
    write(tmp_path, "[model]\nnum_steps = 20\n", "base.toml")
    grid = load_grid(
        write(tmp_path, 'spec = "base.toml"\n[grid]\n"model.learning_rate" = [1e-4, 3e-4]\n'
              'model.batch_size = [8, 16, 32]\n'),
        env="dev",
    )  # fmt: skip
    assert grid.keys == ("model.learning_rate", "model.batch_size")
    assert [p.number for p in grid.points] == [1, 2, 3, 4, 5, 6]
    assert [dict(p.values) for p in grid.points[:4]] == [
        {"model.learning_rate": 1e-4, "model.batch_size": 8},
        {"model.learning_rate": 1e-4, "model.batch_size": 16},
        {"model.learning_rate": 1e-4, "model.batch_size": 32},
        {"model.learning_rate": 3e-4, "model.batch_size": 8},
    ]
    last = grid.points[-1].spec
    assert (last.model.learning_rate, last.model.batch_size, last.model.num_steps) == (3e-4, 32, 20)
    assert last.env == "dev" and grid.base_source.endswith("base.toml")


def test_an_inline_base_and_a_spec_flag_work_and_not_both(tmp_path):
    grid = load_grid(
        write(tmp_path, '[base.model]\nnum_steps = 7\n[grid]\n"data.min_items" = [1, 2]\n'), env="dev"
    )
    assert [p.spec.model.num_steps for p in grid.points] == [7, 7]
    assert [p.spec.data.min_items for p in grid.points] == [1, 2]
    base = write(tmp_path, '{"model": {"num_steps": 9}}', "base.json")
    grid = load_grid(write(tmp_path, '[grid]\n"model.seed" = [1, 2]\n', "g.toml"), env="dev", spec_path=base)
    assert [p.spec.model.num_steps for p in grid.points] == [9, 9]
    with pytest.raises(ConfigError, match="given twice"):
        load_grid(write(tmp_path, '[base.model]\nnum_steps = 7\n[grid]\n"model.seed" = [1]\n'), env="dev",
                  spec_path=base)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[grid]\n"training.learning_rate" = [1]\n', "key 'training.learning_rate' is not a run-spec"),
        ('[grid]\n"model.nope" = [1]\n', "key 'model.nope' is not a run-spec path"),
        ('[grid]\n"env" = ["a"]\n', "key 'env' is not a run-spec path"),
        ('[grid]\n"model.seed" = 3\n', "'model.seed' must be a non-empty list"),
        ('[grid]\n"model.seed" = []\n', "'model.seed' must be a non-empty list"),
        ('[grid]\n"model.seed" = [1, 1]\n', "'model.seed' lists 1 twice"),
        ("x = 1\n[grid]\n", "unknown key 'x'"),
        ("spec = 'base.toml'\n", r"no \[grid\] table"),
        ('[grid]\n"model.learning_rate" = [1e-4, "fast"]\n',
         r"point 2 \(model.learning_rate='fast'\): \$.model.learning_rate"),
        ('[grid]\n"model.num_steps" = [10, -5]\n', r"point 2 \(model.num_steps=-5\): \$.model.num_steps"),
        ("[grid\n", "is not valid TOML"),
        ('env = "prod"\n[grid]\n"model.seed" = [1]\n', "unknown key 'env'"),
        ('[base]\nenv = "prod"\n[grid]\n"model.seed" = [1]\n', "for env 'prod' but --env=dev"),
    ],
)  # fmt: skip
def test_a_bad_grid_is_one_line_naming_the_key(tmp_path, text, expected):
    (tmp_path / "base.toml").write_text("")
    with pytest.raises(UserError, match=expected) as info:
        load_grid(write(tmp_path, text), env="dev")
    assert "\n" not in str(info.value)
    assert "sweep.toml" in str(info.value)


def test_a_grid_past_the_limit_is_refused_with_its_shape_before_anything_is_validated(tmp_path):
    seeds = ", ".join(str(i) for i in range(51))
    text = f'[grid]\n"model.seed" = [{seeds}]\n"model.batch_size" = [8, 16]\n'
    with pytest.raises(ConfigError, match=rf"102 points \(51 x 2\); at most {MAX_POINTS}"):
        load_grid(write(tmp_path, text), env="dev")


def test_a_missing_grid_file_or_base_says_which(tmp_path):
    with pytest.raises(ConfigError, match="grid file .*nope.toml not found.*--grid"):
        load_grid(tmp_path / "nope.toml", env="dev")
    with pytest.raises(ConfigError, match="run spec .*missing.toml not found"):
        load_grid(write(tmp_path, 'spec = "missing.toml"\n[grid]\n"model.seed" = [1]\n'), env="dev")
