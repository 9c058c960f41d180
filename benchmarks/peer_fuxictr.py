"""Peer comparison with two other libraries in ONE run: ours vs FuxiCTR (PyTorch) and DeepCTR (Keras).

    pip install -e .[bench]     # deepctr 0.9.4, fuxictr 2.3.10 (+ its model_zoo.LongCTR), CPU torch
    python -m benchmarks.peer_fuxictr --data_dir=out/bench/data [--epochs=3] [--steps_per_epoch=0]
        [--batch_size=1024] [--threads=N] [--models=din,deepfm,sim] [--rounds=1]
        [--json_out=PATH] [--merge_into=benchmarks/results.json]

Runs, each in its own subprocess (``--worker``), per model: ours (``--model=din`` / ``deepfm`` /
``sim``, and ``tan`` beside SIM), DeepCTR's ``DIN`` / ``DeepFM`` (DeepCTR has no SIM) and
FuxiCTR's ``DIN`` / ``SIM`` (``model_zoo.LongCTR``) / ``DeepFM``. Each trains ``--epochs`` epochs
of ``--steps_per_epoch`` steps (0 = one full pass, ``train rows // batch``) at the same batch
size; the first epoch is warm-up, the others are timed (median step time, as
``benchmarks.train.time_fit``); then the test AUC over the whole test split (``ctrcore.metrics.auc``
for all, on the same examples). Printed and written (``--json_out``): examples/s, CPU time per
step, test AUC, and ``ours / theirs`` examples/s per model: ``vs_peer_{din,deepfm,sim}_fuxictr``
(and ``vs_peer_{din,deepfm}_deepctr``, the DeepCTR models of the same run), each
``{ratio, ratio_cpu, ours_ex_s, theirs_ex_s, ours_auc, theirs_auc, threads}``;
``vs_peer_sim_fuxictr`` also carries TAN's (``tan_ex_s``, ``tan_auc``). ``--merge_into`` writes
these keys, and the whole output under ``details.peer_fuxictr``, into an existing
``benchmarks/results.json`` (:func:`merge_into_results`; ``benchmarks.run_all --fuxictr`` runs this
module inside run_all instead).

**Threads.** Every worker gets ``--threads`` N (default ``os.cpu_count()``): TF intra-op and
inter-op threads = N (``tf.config.threading``), torch ``set_num_threads(N)`` and
``set_num_interop_threads(N)``, and ``OMP_NUM_THREADS = MKL_NUM_THREADS = N``; each run records
what its framework reports back (``thread_settings``). tf.data keeps its own pool (ours' and
DeepCTR's in-memory input only gathers there); torch's batch gather runs in the training thread.

**Input** (prepared data for everyone, nothing parsed or looked up in a timed step):

* ours: the trainer's own input (``ctrcore.trainer.make_train_input``, ``--train_input=auto`` ->
  in memory: the split parsed and looked up once, every batch a ``tf.gather`` from a per-pass
  permutation, on the tf.data threads; RESULTS.md section 3);
* the peers: one ``prepare`` subprocess reads the same TFRecords (``ctrcore.data.load_columns`` =
  ``make_dataset`` + the same ``IdLookup`` vocabularies as ours: ``""`` -> 0, OOV -> 1) and writes
  the train / test id columns as ``.npy`` under ``--work_dir``. DeepCTR gets them through the
  same ``ctrcore.data.in_memory_dataset`` as ours (per-pass permutation, tf.data threads).
  FuxiCTR gets them as torch tensors made once; a batch is an index of a per-pass
  ``torch.randperm`` (``torch.Generator`` seeded), gathered in the training loop's thread (that
  gather is inside the timed step; its median is recorded as ``input_s_median``). The LongCTR
  item layout (``(batch_dict, item_dict, mask)``, history then target per row, pre-padded,
  oldest first) is built once for all rows, not per batch (FuxiCTR's own
  ``LongCTRDataLoader`` does it per batch from parquet + pandas, which is not what is compared).

**Same models as far as the three libraries allow** (ours = ``ctrcore.backbones``):

================ ============================= ============================= ===========================
                 ours                          FuxiCTR 2.3.10                DeepCTR 0.9.4
================ ============================= ============================= ===========================
ids, embeddings  user_id + profile (user_gender, user_age); target item/category/seller; tables
                 shared target/history; dim 16 (``--emb_dim``); padding id 0
emb. init        U(-0.05, 0.05) (Keras          re-initialised U(-0.05, 0.05)  ``embeddings_initializer=
                 "uniform")                    after build, padding row 0     RandomUniform(-0.05, 0.05)``
                                               (``--emb_init=library``: the   (``library``: N(0, 1e-4))
                                               library's N(0, 1e-4))
dense init       Glorot uniform                Glorot (xavier) normal         Glorot normal / uniform
prediction MLP   200 -> 80 relu, dropout 0.2 -> 1 (``dnn_hidden_units`` / ``hidden_units``)
optimizer        Adagrad 0.05, accumulator 0.1, lr / (1 + 0.5 t / 10000) (InverseTimeDecay);
                 legacy Keras Adagrad (eps      ``torch.optim.Adagrad(lr_decay  legacy Keras Adagrad (same
                 1e-7)                          = 5e-5, eps=1e-7)``, set       schedule)
                                               after FuxiCTR's ``compile``
gradient clip    none                          global norm 10 (FuxiCTR's      none
                                               ``fit`` default, kept)
embedding grads  sparse rows                   dense tables (``nn.Embedding`` sparse rows
                                               default)
loss             mean BCE (+ nothing)          mean BCE on the sigmoid        mean BCE
                                               output (SIM: + GSU loss, below)
---------------- ----------------------------- ----------------------------- ---------------------------
**DIN**          short history 20; attention MLP [q, k, q-k, q*k] -> 80 -> 40 sigmoid -> 1, no
                 softmax, padding masked; MLP input user + target + attention pooling
                 + masked mean of the history  -                             -
**DeepFM**       9 fields: 3 user, 3 target, 3 masked-mean history sides (shared tables); FM
                 second order over them; MLP over their concatenation
                 first order: user + target    first order: all 9 fields      first order: user + target
                 (1-d tables per vocabulary)   (1-d tables per feature,       (``linear_feature_columns``)
                                               history summed)
                 the wheel has no DeepFM class: it is the composition of FuxiCTR's model_zoo
                 ``DeepFM_torch`` from the wheel's layers (``FeatureEmbedding``,
                 ``FactorizationMachine``, ``MLP_Block``) in :func:`fuxictr_deepfm_class`
**SIM**          short 20 + long 100 (the long sequence holds the short one: the 20 most recent
                 of the 100, checked per run as ``short_is_long_prefix``); 4 heads, 48 dims
                 (= 3 x 16) for both attentions; MLP input user + target + short + long
                 interest
                 hard search: multi-head        soft search: GSU scores        no SIM
                 target attention over all      ``W_a t . W_b x`` over all
                 100, masked to the target's    100 positions -> top-k
                 category (Keras MHA weights,   (``--sim_topk``, default 100 =
                 with biases)                   all, the same attended length
                                               as ours) -> multi-head target
                                               attention (no biases); + GSU
                                               auxiliary MLP 200-80 and its
                                               BCE (alpha = 1), FuxiCTR's
                                               only SIM form
**TAN** (ours)   beside SIM: TAN (CCN's backbone, no contrastive loss; trigger + 4 attentions +
                 collaborative module); no peer has it
================ ============================= ============================= ===========================

FuxiCTR's ``fit()`` also evaluates the validation split, checkpoints and decays the learning
rate on plateau every epoch; here its own ``train_step`` (forward, loss, backward, clip,
optimizer step) is called in a loop like its ``train_epoch`` does, with ``loss.item()`` per step
as there, and neither ours nor DeepCTR validate during the timed fit either.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Optional

from benchmarks.train import (cpu_seconds, load_average, machine_info, run_worker, summarize_steps,
                              time_fit)

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("din", "deepfm", "sim")
#: which library has which model (ours also runs ``tan`` beside ``sim``)
PEERS = {"din": ("deepctr", "fuxictr"), "deepfm": ("deepctr", "fuxictr"), "sim": ("fuxictr",)}
EVAL_BATCH = 4096
EMB_INIT_RANGE = 0.05  # Keras "uniform", ours (ctrcore.layers.IdEmbedding)


# ---------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------
def thread_env(n: int) -> None:
    """Before TF / torch are imported: the OpenMP / MKL pools (torch's intra-op pool is OpenMP)."""
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(n)


def set_tf_threads(n: int) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    return {"tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def set_torch_threads(n: int) -> dict:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set / parallel work started (only in a reused process, tests)
        pass
    return {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


# ---------------------------------------------------------------------------------------------
# prepared data: the id columns of train / test as .npy (one prepare subprocess per run)
# ---------------------------------------------------------------------------------------------
def feature_names(spec) -> dict:
    """The spec's names of what the peers read (resolved like ``ctrcore.backbones.Backbone``)."""
    sides = list(spec.config.item_side)
    item_vocabs = {spec.features[s].vocab for s in sides if s in spec.features}
    user = [n for n, fd in spec.serving_features.items()
            if fd.vocab and not fd.shape and fd.vocab not in item_vocabs]
    return {"user": user, "sides": sides, "short": [f"short_{s}s" for s in sides],
            "long": [f"long_{s}s" for s in sides], "label": spec.label}


def prepare(data_dir: str, work_dir: str, splits=("train", "test")) -> dict:
    """Parse + look up (ours' ``IdLookup``) the peers' columns of ``splits`` once and write
    ``work_dir/{split}/{name}.npy`` and ``work_dir/meta.json`` (vocabulary sizes, names, rows)."""
    import numpy as np

    from ctrcore import schema
    from ctrcore.data import load_columns
    from ctrcore.layers import IdLookup

    spec = schema.load_spec(data_dir)
    names = feature_names(spec)
    cols = names["user"] + names["sides"] + names["short"] + names["long"] + [names["label"]]
    lookups = {v: IdLookup(spec.vocab_path(v), vocab_name=v) for v in spec.vocabularies}

    def lookup(f):
        return {n: (lookups[spec.features[n].vocab](x) if spec.features[n].vocab else x) for n, x in f.items()}

    meta = {"data_dir": os.path.abspath(data_dir), "names": names,
            "vocab_of": {n: spec.features[n].vocab for n in cols if spec.features[n].vocab},
            "vocab_size": {v: int(l.input_dim) for v, l in lookups.items()},
            "short_len": spec.config.short_len, "long_len": spec.config.long_len, "rows": {}}
    t0 = time.time()
    for split in splits:
        data = load_columns(data_dir, split, spec=spec, features=cols, map_fn=lookup)
        os.makedirs(os.path.join(work_dir, split), exist_ok=True)
        for n, v in data.items():
            v = v.astype(np.int32) if v.dtype != np.int32 else v
            np.save(os.path.join(work_dir, split, f"{n}.npy"), v)
        meta["rows"][split] = int(len(data[names["label"]]))
        s = min(spec.config.short_len, spec.config.long_len)
        same = np.all(data[names["short"][0]][:, :s] == data[names["long"][0]][:, :s], axis=1)
        meta.setdefault("short_is_long_prefix", {})[split] = float(np.mean(same))
    meta["prepare_seconds"] = time.time() - t0
    with open(os.path.join(work_dir, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    return meta


def load_prepared(work_dir: str, split: str, names: List[str]) -> dict:
    import numpy as np

    return {n: np.load(os.path.join(work_dir, split, f"{n}.npy")) for n in names}


def load_meta(work_dir: str) -> dict:
    with open(os.path.join(work_dir, "meta.json")) as fh:
        return json.load(fh)


def steps_per_epoch(a, rows: int) -> int:
    spe = a.steps_per_epoch or rows // a.batch_size
    if spe <= 0:
        raise ValueError(f"{rows} training rows < one batch of {a.batch_size}")
    return spe


def _auc(labels, probs) -> dict:
    import numpy as np

    from ctrcore import metrics

    probs = np.asarray(probs, np.float64).reshape(-1)
    if not np.all(np.isfinite(probs)):
        raise FloatingPointError(f"{int(np.sum(~np.isfinite(probs)))} non-finite test predictions")
    return {"auc": metrics.auc(labels, probs), "logloss": metrics.logloss(labels, probs),
            "n_test": int(len(probs))}


# ---------------------------------------------------------------------------------------------
# FuxiCTR (torch)
# ---------------------------------------------------------------------------------------------
def fuxictr_deepfm_class():
    """DeepFM as FuxiCTR's ``model_zoo/DeepFM/DeepFM_torch`` composes it (that directory is not in
    the 2.3.10 wheel): ``sigmoid(LR(X) + FM(E) + MLP(flatten(E)))`` from the wheel's layers."""
    from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel

    class DeepFM(BaseModel):
        def __init__(self, feature_map, model_id="DeepFM", gpu=-1, learning_rate=1e-3, embedding_dim=10,
                     hidden_units=(64, 64, 64), hidden_activations="ReLU", net_dropout=0.0,
                     batch_norm=False, embedding_regularizer=None, net_regularizer=None, **kwargs):
            super().__init__(feature_map, model_id=model_id, gpu=gpu,
                             embedding_regularizer=embedding_regularizer,
                             net_regularizer=net_regularizer, **kwargs)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            self.fm = FactorizationMachine(feature_map)  # first order (LR) + FM second order
            self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                                 hidden_units=list(hidden_units), hidden_activations=hidden_activations,
                                 output_activation=None, dropout_rates=net_dropout,
                                 batch_norm=batch_norm)
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            x = self.get_inputs(inputs)
            emb = self.embedding_layer(x)  # [B, fields, dim]
            logit = self.fm(x, emb) + self.mlp(emb.flatten(start_dim=1))
            return {"y_pred": self.output_activation(logit)}

    return DeepFM


def fuxictr_feature_map(meta: dict, model: str, emb_dim: int, work_dir: str):
    """The ``fuxictr.features.FeatureMap`` FuxiCTR's preprocessing would write, built in memory:
    categorical user / target features (``padding_idx`` 0, our vocabulary sizes); for DeepFM
    also the short-history sequences (``share_embedding`` with the target side, masked average
    pooling, FuxiCTR's default sequence encoder). DIN / SIM read the history through the
    LongCTR ``item_dict`` (the ``source: item`` features' tables), not as features."""
    from fuxictr.features import FeatureMap

    names, size, vocab_of = meta["names"], meta["vocab_size"], meta["vocab_of"]
    fmap = FeatureMap(f"peer_{model}", work_dir)
    feats = OrderedDict()
    for n in names["user"]:
        feats[n] = {"source": "user", "type": "categorical", "padding_idx": 0,
                    "vocab_size": size[vocab_of[n]]}
    for s in names["sides"]:
        feats[s] = {"source": "item", "type": "categorical", "padding_idx": 0, "vocab_size": size[vocab_of[s]]}
    if model == "deepfm":
        for s, h in zip(names["sides"], names["short"]):
            feats[h] = {"source": "user", "type": "sequence", "padding_idx": 0, "share_embedding": s,
                        "feature_encoder": "layers.MaskedAveragePooling()",
                        "max_len": meta["short_len"], "vocab_size": size[vocab_of[s]]}
    fmap.features = feats
    fmap.labels = [names["label"]]
    fmap.default_emb_dim = emb_dim
    fmap.num_fields = fmap.get_num_fields()
    fmap.set_column_index()
    return fmap


def build_fuxictr(model: str, meta: dict, a, work_dir: str):
    """FuxiCTR's model with the sizes of the table in the module docstring, and our optimizer."""
    import torch

    fmap = fuxictr_feature_map(meta, model, a.emb_dim, work_dir)
    common = dict(gpu=-1, learning_rate=a.learning_rate, embedding_dim=a.emb_dim, net_dropout=a.dropout,
                  optimizer="Adagrad", loss="binary_crossentropy", verbose=0, model_root=work_dir,
                  metrics=["AUC"], embedding_regularizer=None, net_regularizer=None)
    if model == "din":
        from model_zoo.LongCTR import DIN

        m = DIN(fmap, dnn_hidden_units=list(a.mlp_units), dnn_activations="ReLU",
                attention_hidden_units=[80, 40], attention_hidden_activations="Sigmoid",
                attention_output_activation=None, din_use_softmax=False, **common)
    elif model == "sim":
        from model_zoo.LongCTR import SIM

        item_dim = a.emb_dim * len(meta["names"]["sides"])
        m = SIM(fmap, dnn_hidden_units=list(a.mlp_units), dnn_activations="ReLU", attention_dim=item_dim,
                num_heads=a.heads, gsu_type="soft", short_seq_len=meta["short_len"] + 1,
                topk=a.sim_topk or meta["long_len"], alpha=1, beta=1, **common)
    elif model == "deepfm":
        m = fuxictr_deepfm_class()(fmap, hidden_units=list(a.mlp_units), hidden_activations="ReLU", **common)
    else:
        raise ValueError(f"FuxiCTR peer has no {model!r}")
    if a.emb_init == "ours":  # the tables of width emb_dim (not the 1-d first-order weights)
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, torch.nn.Embedding) and mod.embedding_dim == a.emb_dim:
                    mod.weight.uniform_(-EMB_INIT_RANGE, EMB_INIT_RANGE)
                    if mod.padding_idx is not None:
                        mod.weight[mod.padding_idx].zero_()
    # ours: Adagrad (--learning_rate), initial accumulator 0.1, eps 1e-7, InverseTimeDecay(10000, 0.5) =
    # torch's lr / (1 + (step - 1) * lr_decay) with lr_decay = 0.5 / 10000
    m.optimizer = torch.optim.Adagrad(m.parameters(), lr=a.learning_rate, lr_decay=a.lr_decay_rate / a.lr_decay_steps,
                                      initial_accumulator_value=a.adagrad_initial_accumulator, eps=1e-7)
    m._max_gradient_norm = 10.0  # BaseModel.fit's default
    m._batch_index = 0
    return m


class FuxiBatches:
    """FuxiCTR batches from prepared id columns: ``batch(idx)`` -> the model's input.

    DIN / SIM (LongCTR): ``(batch_dict, item_dict, mask)``: ``batch_dict`` = user features +
    label ``[B]``, ``item_dict[side]`` = ``[B * (L + 1)]`` (per row the history, pre-padded and
    oldest first, then the target), ``mask [B, L]`` float (1 = item). The history is the short
    sequence (DIN) or the long one (SIM; its last ``short_len`` positions are the short one).
    DeepFM: ``{feature: [B] or [B, L]}`` + label."""

    def __init__(self, cols: dict, meta: dict, model: str):
        import numpy as np
        import torch

        names = meta["names"]
        self.model = model
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x).astype(np.int64))
        self.flat = {n: t(cols[n]) for n in names["user"]}
        self.label = torch.from_numpy(cols[names["label"]].astype(np.float32))
        self.label_name = names["label"]
        self.n = len(cols[names["label"]])
        if model == "deepfm":
            for n in names["sides"] + names["short"]:
                self.flat[n] = t(cols[n])
            self.items = None
        else:
            hist = names["short"] if model == "din" else names["long"]
            # stored most recent first, padded at the end -> oldest first, padded at the front
            self.items = {s: t(np.concatenate([cols[h][:, ::-1], cols[s][:, None]], axis=1))
                          for s, h in zip(names["sides"], hist)}
            self.mask = (self.items[names["sides"][0]][:, :-1] > 0).float()

    def batch(self, idx):
        bd = {n: v[idx] for n, v in self.flat.items()}
        bd[self.label_name] = self.label[idx]
        if self.items is None:
            return bd
        return bd, {s: v[idx].reshape(-1) for s, v in self.items.items()}, self.mask[idx]

    def epochs(self, batch_size: int, seed: int = 0):
        """Endless stream of batch indices: a fresh permutation per pass, full batches only."""
        import torch

        g = torch.Generator().manual_seed(seed)
        nb = self.n // batch_size
        while True:
            perm = torch.randperm(self.n, generator=g)
            for i in range(nb):
                yield perm[i * batch_size:(i + 1) * batch_size]


def fuxictr_predict(model, batches: FuxiBatches, batch_size: int = EVAL_BATCH):
    import numpy as np
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, batches.n, batch_size):
            idx = torch.arange(i, min(i + batch_size, batches.n))
            out.append(model.forward(batches.batch(idx))["y_pred"].reshape(-1).numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros(0)


def fuxictr_train(model, batches: FuxiBatches, epochs: int, warmup_epochs: int, spe: int,
                  batch_size: int, seed: int = 0) -> dict:
    """FuxiCTR's ``train_step`` per batch (as its ``train_epoch``: ``loss.item()`` per step);
    per-step wall times and per-epoch CPU times, summarised as ``benchmarks.train.time_fit``."""
    import math

    model.train()
    stream = batches.epochs(batch_size, seed)
    epoch_ts, epoch_cpu, gather_s, losses = [], [], [], []
    t_start = time.perf_counter()
    for _ in range(warmup_epochs + epochs):
        ts, c0 = [time.perf_counter()], cpu_seconds()
        for i in range(spe):
            g0 = time.perf_counter()
            inp = batches.batch(next(stream))
            gather_s.append(time.perf_counter() - g0)
            model._batch_index = i
            losses.append(model.train_step(inp).item())
            ts.append(time.perf_counter())
        epoch_ts.append(ts)
        epoch_cpu.append(cpu_seconds() - c0)
    total = time.perf_counter() - t_start
    if not all(math.isfinite(x) for x in losses):
        raise FloatingPointError("non-finite FuxiCTR training loss")
    steps, means, cpu, wall, cpu_per_step = [], [], 0.0, 0.0, []
    for ts, c in list(zip(epoch_ts, epoch_cpu))[warmup_epochs:]:
        d = [b - a for a, b in zip(ts[:-1], ts[1:])]
        cpu_per_step.append(c / len(d))
        d = d[1:] if len(d) > 1 else d
        steps += d
        means.append(statistics.mean(d))
        wall += ts[-1] - ts[0]
        cpu += c
    out = summarize_steps(steps, means) if steps else {}
    out.update(cpu_s_per_step_median=statistics.median(cpu_per_step) if cpu_per_step else None,
               fit_seconds=total, warmup_seconds=sum(ts[-1] - ts[0] for ts in epoch_ts[:warmup_epochs]),
               cpu_util=cpu / wall if wall else None,
               input_s_median=statistics.median(gather_s[spe * warmup_epochs:] or gather_s),
               train_loss_last_epoch=statistics.mean(losses[-spe:]))
    return out


def fuxictr_worker(a) -> dict:
    threads = set_torch_threads(a.threads)
    import torch

    from fuxictr.pytorch.torch_utils import seed_everything

    seed_everything(a.seed)
    meta = load_meta(a.work_dir)
    names = meta["names"]
    cols = names["user"] + names["sides"] + (names["short"] if a.model in ("din", "deepfm") else names["long"])
    cols += [names["label"]]
    train = FuxiBatches(load_prepared(a.work_dir, "train", cols), meta, a.model)
    test = FuxiBatches(load_prepared(a.work_dir, "test", cols), meta, a.model)
    model = build_fuxictr(a.model, meta, a, a.work_dir)
    spe = steps_per_epoch(a, train.n)
    load0 = load_average()
    res = fuxictr_train(model, train, a.epochs - 1, 1, spe, a.batch_size, a.seed)
    res.update(_auc(test.label.numpy(), fuxictr_predict(model, test)))
    res.update(who="fuxictr", model=f"fuxictr.{type(model).__name__}", batch_size=a.batch_size,
               steps_per_epoch=spe, epochs=a.epochs, examples_per_second=a.batch_size / res["step_s_median"],
               trainable_parameters=int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
               thread_settings=threads, threads=a.threads, torch=torch.__version__,
               load_average_start=load0, load_average_end=load_average(),
               short_is_long_prefix=meta.get("short_is_long_prefix"))
    if a.model == "sim":
        res["sim_topk"] = model.topk
    return res


# ---------------------------------------------------------------------------------------------
# DeepCTR (Keras) and ours
# ---------------------------------------------------------------------------------------------
def build_deepctr(model: str, meta: dict, a):
    import tf_keras as keras
    from deepctr.feature_column import SparseFeat, VarLenSparseFeat

    names, size, vocab_of = meta["names"], meta["vocab_size"], meta["vocab_of"]
    seeds = iter(range(a.seed * 100, a.seed * 100 + 100))

    def init():  # one seeded initializer per table (a shared unseeded one repeats its values)
        if a.emb_init != "ours":
            return {}
        return {"embeddings_initializer": keras.initializers.RandomUniform(
            -EMB_INIT_RANGE, EMB_INIT_RANGE, seed=next(seeds))}

    sparse = [SparseFeat(n, size[vocab_of[n]], embedding_dim=a.emb_dim, **init()) for n in names["user"]]
    sparse += [SparseFeat(s, size[vocab_of[s]], embedding_dim=a.emb_dim, **init()) for s in names["sides"]]
    hist = [VarLenSparseFeat(SparseFeat(f"hist_{s}", size[vocab_of[s]], embedding_dim=a.emb_dim,
                                        embedding_name=s, **init()), maxlen=meta["short_len"],
                             combiner="mean")  # shares the table of ``s``
            for s in names["sides"]]
    if model == "din":
        from deepctr.models import DIN

        m = DIN(sparse + hist, list(names["sides"]), dnn_hidden_units=tuple(a.mlp_units), dnn_activation="relu",
                att_hidden_size=(80, 40), att_activation="sigmoid", att_weight_normalization=False,
                l2_reg_embedding=0.0, dnn_dropout=a.dropout, task="binary")
    elif model == "deepfm":
        from deepctr.models import DeepFM

        m = DeepFM(sparse, sparse + hist, dnn_hidden_units=tuple(a.mlp_units), l2_reg_linear=0.0,
                   l2_reg_embedding=0.0, dnn_dropout=a.dropout, dnn_activation="relu", task="binary")
    else:
        raise ValueError(f"DeepCTR peer has no {model!r}")
    lr = keras.optimizers.schedules.InverseTimeDecay(a.learning_rate, decay_steps=a.lr_decay_steps,
                                                     decay_rate=a.lr_decay_rate)
    m.compile(keras.optimizers.legacy.Adagrad(lr, initial_accumulator_value=a.adagrad_initial_accumulator),
              "binary_crossentropy")
    return m


def deepctr_inputs(meta: dict):
    """Prepared columns -> DeepCTR's input dict (``[B, 1]`` ids, ``hist_<side>`` ``[B, L]``)."""
    import tensorflow as tf

    names = meta["names"]

    def to_x(f):
        x = {n: f[n][:, None] for n in names["user"] + names["sides"]}
        x.update({f"hist_{s}": f[h] for s, h in zip(names["sides"], names["short"])})
        return x
    return to_x, lambda f: (to_x(f), tf.cast(f[names["label"]], tf.float32)[:, None])


def deepctr_worker(a) -> dict:
    threads = set_tf_threads(a.threads)
    import tensorflow as tf
    import tf_keras as keras

    from ctrcore.data import in_memory_dataset

    keras.utils.set_random_seed(a.seed)
    meta = load_meta(a.work_dir)
    names = meta["names"]
    cols = names["user"] + names["sides"] + names["short"] + [names["label"]]
    train = load_prepared(a.work_dir, "train", cols)
    model = build_deepctr(a.model, meta, a)
    to_x, to_xy = deepctr_inputs(meta)
    ds = in_memory_dataset(train, a.batch_size, seed=a.seed).map(to_xy, num_parallel_calls=tf.data.AUTOTUNE)
    spe = steps_per_epoch(a, len(train[names["label"]]))
    load0 = load_average()
    res = time_fit(model, ds.prefetch(tf.data.AUTOTUNE), a.epochs - 1, 1, spe)
    test = load_prepared(a.work_dir, "test", cols)
    test_ds = tf.data.Dataset.from_tensor_slices(test).batch(EVAL_BATCH).map(to_x)
    res.update(_auc(test[names["label"]], model.predict(test_ds, verbose=0)))
    res.update(who="deepctr", model=f"deepctr.{a.model}", batch_size=a.batch_size, steps_per_epoch=spe,
               epochs=a.epochs, examples_per_second=a.batch_size / res["step_s_median"],
               trainable_parameters=int(sum(tf.size(v).numpy() for v in model.trainable_variables)),
               thread_settings=threads, threads=a.threads,
               load_average_start=load0, load_average_end=load_average())
    return res


def ours_worker(a) -> dict:
    threads = set_tf_threads(a.threads)
    import tensorflow as tf

    from benchmarks.train import make_config
    from ccn import models
    from ctrcore import schema, trainer
    from ctrcore.evaluation import predict_split

    spec, stats = schema.load_spec(a.data_dir), schema.load_stats(a.data_dir)
    rows = int((stats.get("examples") or {}).get("train") or load_meta(a.work_dir)["rows"]["train"])
    spe = steps_per_epoch(a, rows)
    cfg = make_config(a.data_dir, a.model, "", a.batch_size, "adagrad", False, 1, spe, a.epochs,
                      emb_dim=a.emb_dim, mlp_units=list(a.mlp_units), dropout=a.dropout, num_heads=a.heads,
                      learning_rate=a.learning_rate, lr_decay_steps=a.lr_decay_steps,
                      lr_decay_rate=a.lr_decay_rate, adagrad_initial_accumulator=a.adagrad_initial_accumulator,
                      seed=a.seed)
    trainer.setup_runtime(cfg)
    model = trainer.build_compiled(cfg, models.model_factory(cfg, models.default_loss_params()), spec, stats)
    ds = trainer.make_train_input(cfg, spec, model)  # exactly the trainer's input
    load0 = load_average()
    res = time_fit(model, ds, a.epochs - 1, 1, spe)
    pred = predict_split(model, spec, a.data_dir, "test", EVAL_BATCH)
    res.update(_auc(pred["label"], pred["prob"]))
    res.update(who="ours", model=a.model, batch_size=a.batch_size, steps_per_epoch=spe, epochs=a.epochs,
               examples_per_second=a.batch_size / res["step_s_median"],
               trainable_parameters=int(sum(tf.size(v).numpy() for v in model.trainable_variables)),
               thread_settings=threads, threads=a.threads,
               load_average_start=load0, load_average_end=load_average())
    return res


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _common_args(a, threads: int) -> List[str]:
    keys = ("data_dir", "work_dir", "batch_size", "epochs", "steps_per_epoch", "emb_dim", "dropout", "heads",
            "learning_rate", "lr_decay_steps", "lr_decay_rate", "adagrad_initial_accumulator", "sim_topk",
            "emb_init", "seed")
    args = [f"--{k}={getattr(a, k)}" for k in keys]
    return args + [f"--mlp_units={','.join(str(u) for u in a.mlp_units)}", f"--threads={threads}"]


def _pair(ours: dict, theirs: dict, threads: int) -> dict:
    return {"ratio": ours["examples_per_second"] / theirs["examples_per_second"],
            "ratio_cpu": theirs["cpu_s_per_step_median"] / ours["cpu_s_per_step_median"],
            "ours_ex_s": ours["examples_per_second"], "theirs_ex_s": theirs["examples_per_second"],
            "ours_auc": ours["auc"], "theirs_auc": theirs["auc"], "threads": threads,
            "ours_cpu_ms_per_step": 1e3 * ours["cpu_s_per_step_median"],
            "theirs_cpu_ms_per_step": 1e3 * theirs["cpu_s_per_step_median"]}


def _median_run(runs: List[dict]) -> dict:
    """The run with the median step time (its AUC with it); one run: that run."""
    runs = sorted(runs, key=lambda r: r["step_s_median"])
    return runs[(len(runs) - 1) // 2]


def summarize(runs: Dict[str, List[dict]], threads: int, models=MODELS) -> dict:
    out = {}
    best = {k: _median_run(v) for k, v in runs.items() if v}
    for m in models:
        ours = best.get(f"ours/{m}")
        for peer in PEERS.get(m, ()):
            theirs = best.get(f"{peer}/{m}")
            if ours and theirs:
                out[f"vs_peer_{m}_{peer}"] = _pair(ours, theirs, threads)
    tan = best.get("ours/tan")
    if tan and "vs_peer_sim_fuxictr" in out:
        out["vs_peer_sim_fuxictr"].update(tan_ex_s=tan["examples_per_second"], tan_auc=tan["auc"],
                                          tan_cpu_ms_per_step=1e3 * tan["cpu_s_per_step_median"])
    return out


def run(a) -> dict:
    threads = a.threads or os.cpu_count() or 1
    models = [m for m in a.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--models: unknown {m!r}; choose from {MODELS}")
    missing = []
    for mod in ("torch", "fuxictr", "model_zoo", "deepctr"):  # found, not imported (TF, torch)
        if importlib.util.find_spec(mod) is None:  # a missing peer is reported, the others run
            missing.append(f"{mod}: not installed")
    if missing:
        print("missing peers (pip install -e .[bench]): " + "; ".join(missing), flush=True)
    load0 = load_average()
    if load0[0] > threads:
        print(f"WARNING: 1-min load {load0[0]} > {threads} threads: the machine is busy. torch's OpenMP "
              "pool degrades far more than TF's under oversubscription (RESULTS.md, FuxiCTR peer); "
              "run on an idle machine for the record.", flush=True)
    os.makedirs(a.work_dir, exist_ok=True)
    common = _common_args(a, threads)
    t0 = time.time()
    prep = run_worker("benchmarks.peer_fuxictr", ["--role=prepare", *common], timeout=a.timeout)
    print(f"prepared {prep['rows']} rows in {time.time() - t0:.0f}s under {a.work_dir} "
          f"(short = first {prep['short_len']} of long: {prep['short_is_long_prefix']})", flush=True)
    have = {"fuxictr": not any(m.startswith(("fuxictr", "model_zoo", "torch")) for m in missing),
            "deepctr": not any(m.startswith("deepctr") for m in missing), "ours": True}
    confs = []
    for m in models:
        confs.append(("ours", m))
        if m == "sim":
            confs.append(("ours", "tan"))
        confs += [(p, m) for p in PEERS[m] if have[p]]
    runs: Dict[str, List[dict]] = {}
    errors: Dict[str, str] = {}
    for rnd in range(a.rounds):
        for who, m in (confs if rnd % 2 == 0 else list(reversed(confs))):
            key = f"{who}/{m}"
            try:
                r = run_worker("benchmarks.peer_fuxictr", [f"--role={who}", f"--model={m}", *common],
                               timeout=a.timeout)
            except Exception as e:  # record and go on: one broken run must not lose the others
                print(f"{key}: FAILED {str(e)[-800:]}", flush=True)
                errors[key] = str(e)[-3000:]
                continue
            runs.setdefault(key, []).append(r)
            print(f"{key:16s} {r['examples_per_second']:9.0f} ex/s  step {1e3 * r['step_s_median']:7.1f} ms "
                  f"cpu {1e3 * r['cpu_s_per_step_median']:6.1f} ms/step cpu_util {r['cpu_util']:.2f}  "
                  f"test AUC {r['auc']:.4f}  params {r['trainable_parameters']:,}  "
                  f"load {r['load_average_start'][0]:.1f}", flush=True)
    res = summarize(runs, threads, models)
    for k, v in res.items():
        print(f"{k:24s} ours/theirs = {v['ratio']:.2f} wall, {v['ratio_cpu']:.2f} cpu-s   "
              f"ours {v['ours_ex_s']:,.0f} ex/s AUC {v['ours_auc']:.4f} | theirs {v['theirs_ex_s']:,.0f} ex/s "
              f"AUC {v['theirs_auc']:.4f}"
              + (f" | TAN {v['tan_ex_s']:,.0f} ex/s AUC {v['tan_auc']:.4f}" if "tan_ex_s" in v else ""),
              flush=True)
    thread_settings = {k: v[0].get("thread_settings") for k, v in runs.items()}
    res.update(threads=threads, thread_settings=thread_settings, batch_size=a.batch_size, epochs=a.epochs,
               steps_per_epoch=a.steps_per_epoch, prepared=prep, runs=runs, errors=errors,
               peer_versions=_versions(), load_average={"start": load0, "end": load_average()})
    return res


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("fuxictr", "torch", "deepctr", "tensorflow", "tf-keras"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


RESULT_KEYS = ("vs_peer_din_fuxictr", "vs_peer_deepfm_fuxictr", "vs_peer_sim_fuxictr",
               "vs_peer_din_deepctr", "vs_peer_deepfm_deepctr")


def merge_into_results(res: dict, path: str = os.path.join(HERE, "results.json")) -> dict:
    """Write the ``vs_peer_*_{fuxictr,deepctr}`` keys and ``details.peer_fuxictr`` into the
    results file of ``benchmarks.run_all`` (created if missing); returns the merged dict."""
    try:
        with open(path) as fh:
            out = json.load(fh)
    except FileNotFoundError:
        out = {}
    for k in RESULT_KEYS:
        if k in res:
            out[k] = res[k]
    out.setdefault("details", {})["peer_fuxictr"] = res
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1, sort_keys=True, default=str)
    return out


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--role", default="", help=argparse.SUPPRESS)  # prepare | ours | deepctr | fuxictr
    ap.add_argument("--model", default="din", help=argparse.SUPPRESS)
    ap.add_argument("--data_dir", default="out/bench/data")
    ap.add_argument("--work_dir", default="out/bench/peer_fuxictr", help="prepared id columns (.npy)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of din, deepfm, sim (+ tan)")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=3, help="epochs trained; the first is warm-up (not timed)")
    ap.add_argument("--steps_per_epoch", type=int, default=0, help="0: one full pass (train rows // batch)")
    ap.add_argument("--threads", type=int, default=0, help="0: os.cpu_count()")
    ap.add_argument("--rounds", type=int, default=1, help="> 1: runs repeated in alternating order")
    ap.add_argument("--emb_dim", type=int, default=16)
    ap.add_argument("--mlp_units", type=lambda s: [int(x) for x in s.split(",")], default=[200, 80])
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--heads", type=int, default=4)
    # the configs' rate (configs/common_synthetic.flags): at the paper's 0.001 no library learns
    # in 3 epochs of this data (ours: test AUC 0.455), and the AUCs would compare nothing
    ap.add_argument("--learning_rate", type=float, default=0.05)
    ap.add_argument("--lr_decay_steps", type=int, default=10000)
    ap.add_argument("--lr_decay_rate", type=float, default=0.5)
    ap.add_argument("--adagrad_initial_accumulator", type=float, default=0.1)
    ap.add_argument("--sim_topk", type=int, default=0, help="FuxiCTR SIM top-k; 0 = the long length")
    ap.add_argument("--emb_init", choices=("ours", "library"), default="ours",
                    help="peers' embedding init: ours U(-0.05, 0.05), or each library's default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per subprocess")
    ap.add_argument("--json_out", default="")
    ap.add_argument("--merge_into", default="", help="e.g. benchmarks/results.json")
    return ap


def worker_main(a) -> dict:
    if a.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first epoch is warm-up)")
    thread_env(a.threads)
    if a.role == "prepare":
        set_tf_threads(a.threads)
        return prepare(a.data_dir, a.work_dir)
    return {"ours": ours_worker, "deepctr": deepctr_worker, "fuxictr": fuxictr_worker}[a.role](a)


def main(argv: Optional[List[str]] = None):
    a = parser().parse_args(argv)
    if a.worker:
        print(json.dumps(worker_main(a), default=str), flush=True)
        return
    if a.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first epoch is warm-up)")
    print(f"machine: {json.dumps(machine_info())}; load {load_average()}", flush=True)
    res = run(a)
    res["command"] = "python -m benchmarks.peer_fuxictr " + " ".join(argv if argv is not None else sys.argv[1:])
    res["machine"] = machine_info()
    if a.json_out:
        with open(a.json_out, "w") as fh:
            json.dump(res, fh, indent=1, sort_keys=True, default=str)
        print(f"wrote {a.json_out}")
    if a.merge_into:
        merge_into_results(res, a.merge_into)
        print(f"merged {', '.join(k for k in RESULT_KEYS if k in res)} into {a.merge_into}")


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
