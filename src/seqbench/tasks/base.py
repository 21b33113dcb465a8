"""What every task module shares. :class:`Task`: what ``run`` asks of a task (its datamodule, its
ranking metric, its config checks). :class:`RecurrentTask`: the embedding -> recurrent stack
encoder, the optimizer and the learning-rate scheduler (Hydra partials from the ``optimizer`` and
``scheduler`` config groups) — every task but the count-based ``task=ngram``."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from seqbench.errors import instantiate
from omegaconf import DictConfig, OmegaConf

from seqbench.errors import ConfigError, choice_error
from seqbench.init import init_recurrent

#: keys of a scheduler option that tell Lightning when to step it (not constructor arguments)
LIGHTNING_SCHEDULER_KEYS = ("interval", "frequency", "monitor")


def plain(cfg) -> dict:
    """DictConfig -> plain dict (checkpoint hyper-parameters must load with weights_only=True)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_partial(option: dict, *args):
    """Call the ``_partial_`` constructor of an optimizer/scheduler option on ``args``.

    An option is its YAML as a plain dict: constructor arguments at the top level, next to the
    option's ``name`` and (schedulers) Lightning's stepping keys, which are left out here."""
    skip = ("name", *LIGHTNING_SCHEDULER_KEYS)
    return instantiate({k: v for k, v in option.items() if k not in skip}, _convert_="all")(*args)


class Task(pl.LightningModule):
    """What ``run`` asks of every task module, so ``run`` stays generic.

    ``datamodule_class`` batches its data (it names the tokenizer's training texts, is built from
    the config and passes extra constructor arguments via ``task_kwargs()``), ``generates`` says
    whether samples are generated after testing, ``primary_metric`` what a comparison ranks by,
    and :meth:`check_config` refuses a config before any run exists. A module may have an
    ``embedding`` (its ``prepare``/``report`` are called) and a ``stack`` (its ``hidden_size`` is
    logged); a task without them (``task=ngram``: counts) simply has none.
    """

    datamodule_class: type | None = None
    generates: bool = False
    #: the number a comparison ranks runs by, and whether lower ("min") or higher ("max") is better
    primary_metric: tuple[str, str] = ("test/loss", "min")
    #: what a report shows beside the primary metric (a column each, where some run logged it)
    secondary_metrics: tuple[str, ...] = ()
    #: the validation metric whose curve a report draws per row
    curve_metric: str = "val/loss"
    #: what the run's closing summary shows beside the primary and secondary metrics
    summary_metrics: tuple[str, ...] = ()
    #: validation metrics a run may select its checkpoint and stop early on (``selection=<name>``:
    #: ``val/<name>``), each with its direction
    selection_metrics: dict[str, str] = {"loss": "min"}
    #: the ``task:`` its datasets declare (``conf/data/*.yaml``); None: this task's own name
    #: (``task=ngram`` reads the LM corpora: ``lm``)
    data_task: str | None = None
    #: False for a task fitted in one pass without a model stack (``task=ngram``: counts): its run
    #: has no early stopping and no ``converged`` metric, and a report names its row by the task,
    #: since the ``model`` group is ignored
    trained_by_gradient: bool = True
    #: whether the task reads text through the ``tokenizer`` group (the synthetic long-range tasks
    #: read symbols or numbers)
    reads_text: bool = True
    #: task keys that count things (batch sizes, lengths): each must be >= 1 when set
    positive_keys: tuple[str, ...] = ("batch_size", "eval_batch_size", "bptt", "max_length")

    @classmethod
    def summary_keys(cls) -> list[str]:
        """The metrics of the closing summary, in order (each shown when the run logged it)."""
        keys = ["train/loss_epoch", "val/loss", "test/loss", cls.primary_metric[0], *cls.secondary_metrics,
                *cls.summary_metrics, "epochs_trained", "converged", "train/tokens_per_s", "train/examples_per_s",
                "num_parameters"]
        return list(dict.fromkeys(keys))

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """This task's checks of a composed config, run by ``seqbench.validate`` before any MLflow
        run exists; each failure is one line. Subclasses add theirs with ``super().check_config(cfg)``.

        Here: the dataset serves this task, counts are >= 1 and ``selection`` is a validation metric
        this task logs."""
        from seqbench.validate import datasets_for

        serves = cfg.data.get("task", "lm")
        if serves != (cls.data_task or cfg.task.name):
            raise ConfigError(f"data={cfg.data.name} is a dataset for task={serves}, not task={cfg.task.name}; "
                              f"datasets for task={cfg.task.name}: {', '.join(datasets_for(cfg.task.name)) or 'none'}")
        for key in cls.positive_keys:
            if cfg.task.get(key) is not None and int(cfg.task[key]) < 1:
                raise ConfigError(f"task.{key}={cfg.task[key]} must be >= 1")
        if cfg.get("selection", "loss") not in cls.selection_metrics:
            raise choice_error(f"selection (a validation metric of task={cfg.task.name})", cfg.selection,
                               tuple(cls.selection_metrics))

    @classmethod
    def protocol(cls, cfg: DictConfig, tuned: tuple[str, ...] = ()) -> list[str]:
        """This task's part of a table's protocol line (:func:`seqbench.protocol.protocol`): how its
        rows are trained (budget, early stopping, batch, model size, optimizer) and, for a task that
        reads text, the tokenizer; a task that generates adds its samples."""
        from seqbench.protocol import samples, training

        parts = training(cfg, tuned)
        if cls.reads_text:
            parts.append(f"tokenizer {cfg.tokenizer.name}")
        return parts + (samples(cfg) if cls.generates and "generate" in cfg.task else [])

    def artifacts(self) -> list:
        """Files the task wrote during training to keep with the run (plots); none by default."""
        return []

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class RecurrentTask(Task):
    """Builds ``self.embedding`` and ``self.stack`` from their config dicts (Hydra ``_target_``),
    and the optimizer and scheduler from theirs."""

    #: why this task needs a unidirectional stack (None: bidirectional models are fine)
    unidirectional_because: str | None = None
    #: why this task needs a stack that resumes from a carried state (None: it never carries one)
    carried_state_because: str | None = None

    def __init__(self, vocab_size: int, model: dict, embedding: dict, optimizer: dict | None = None,
                 scheduler: dict | None = None, recurrent_init: str = "default", recurrent_scale: float = 1.0,
                 **_):
        """``optimizer``/``scheduler``: the resolved ``optimizer`` and ``scheduler`` groups (plain dicts,
        saved in the hyper-parameters by the subclass); only training needs them."""
        super().__init__()
        self.check_model(model)
        self.embedding = instantiate(plain(embedding), vocab_size=vocab_size)
        self.stack = instantiate(plain(model), input_size=self.embedding.dim)
        init_recurrent(self.stack, recurrent_init, recurrent_scale)  # seqbench.init: default keeps torch's

    @classmethod
    def check_model(cls, model) -> None:
        """The one home of "this task needs a unidirectional model" (or one that carries a state):
        checked on the config before any run and again when a module is built from a model dict."""
        name = model.get("name", model.get("cell"))
        if cls.unidirectional_because and model.get("bidirectional", False):
            raise ConfigError(f"model={name} is bidirectional: "
                              f"{cls.unidirectional_because}; use a unidirectional model, e.g. model=lstm")
        from seqbench.cells import SCRATCH_CELLS

        stack = SCRATCH_CELLS.get(model.get("cell"))  # an unknown cell is seqbench.cells.check_model's to report
        if cls.carried_state_because and stack is not None and not stack.carries_state:
            raise ConfigError(f"model={name} carries no state from one window to the next: "
                              f"{cls.carried_state_because}; use it with task=classify")

    @classmethod
    def stack_input_size(cls, cfg: DictConfig) -> int | None:
        """Width of the recurrent stack's input for this config, known before the data: the
        embedding's ``dim`` (None when it is the vocabulary's size: ``onehot``)."""
        return cfg.embedding.get("dim")

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """:meth:`Task.check_config`, then the model's direction, the recurrent init scheme, and the
        optimizer and scheduler, built on a dummy parameter so that torch's own checks (lr, betas,
        momentum, mode, ...) speak."""
        from seqbench.init import check_scheme

        super().check_config(cfg)
        cls.check_model(cfg.model)
        if cfg.model.get("param_budget") is not None:  # equal-size mode: solvable for this task's input?
            from seqbench.cells import check_model as check_stack

            check_stack(cfg.model, input_size=cls.stack_input_size(cfg))
        check_scheme(cfg.task.get("recurrent_init", "default"), cfg.task.get("recurrent_scale", 1.0))
        if not float(cfg.optimizer.lr) > 0:
            raise ConfigError(f"optimizer.lr={cfg.optimizer.lr} must be > 0")
        optimizer, scheduler = plain(cfg.optimizer), plain(cfg.scheduler)
        try:
            opt = build_partial(optimizer, [torch.nn.Parameter(torch.zeros(1))])
        except (ValueError, TypeError, InstantiationException) as e:
            raise ConfigError(f"optimizer={optimizer['name']}: {str(e).splitlines()[0]}") from None
        if "_target_" in scheduler:
            try:
                build_partial(scheduler, opt)
            except (ValueError, TypeError, InstantiationException) as e:
                raise ConfigError(f"scheduler={scheduler['name']}: {str(e).splitlines()[0]}") from None

    def configure_optimizers(self):
        """The optimizer option on this module's parameters; with a scheduler, Lightning's dict."""
        optimizer = build_partial(self.hparams.optimizer, self.parameters())
        scheduler = self.hparams.get("scheduler") or {}
        if "_target_" not in scheduler:  # scheduler=none
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": build_partial(scheduler, optimizer),
                                 **{k: scheduler[k] for k in LIGHTNING_SCHEDULER_KEYS if k in scheduler}}}
