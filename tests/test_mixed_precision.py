"""Mixed precision (issue 6: runs on CPU in CI): the train step works under mixed_bfloat16 and
under mixed_float16 with dynamic loss scaling, every loss term stays float32 and finite, and the
served outputs are float32."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ccn import train as T  # noqa: E402
from ctrcore.config import ConfigError  # noqa: E402
from tests.test_trainer import _cfg, _lp  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ctrcore.testing import write_fake_dataset
    d = str(tmp_path_factory.mktemp("fake") / "data")
    write_fake_dataset(d, n_examples=300, seed=0)
    return d


@pytest.fixture(autouse=True)
def _reset_policy():
    yield
    import tf_keras as keras
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy, model, aux", [("mixed_bfloat16", "ccn", ()),
                                                ("mixed_float16", "din", ("aqcl",))])
def test_mixed_precision_trains(data, tmp_path, policy, model, aux):
    md = str(tmp_path / "run")
    s = T.run(_cfg(data, md, model=model, aux_losses=list(aux), mixed_precision=policy,
                   optimizer="adagrad", train_steps=2), _lp(), argv=[])
    h = json.load(open(os.path.join(md, "history.json")))
    train = h["epochs"][0]["train"]
    assert h["runtime"]["steps"] == 2
    assert all(np.isfinite(v) for k, v in train.items() if isinstance(v, float)), train
    assert np.isfinite(s["metrics"]["logloss"])
    out = s["model"]({k: v for k, v in next(iter(_batch(data))).items()})
    assert out["probabilities"].dtype.name == "float32"


def _batch(data_dir):
    from ctrcore.data import make_dataset
    return make_dataset(data_dir, "valid", 8, shuffle=False, roles=("serving",)).take(1)


def test_float16_with_composite_optimizer_is_refused(data, tmp_path):
    with pytest.raises(ConfigError, match="loss scaling"):
        _cfg(data, str(tmp_path / "r"), model="din", mixed_precision="mixed_float16",
             optimizer="composite").validate()
