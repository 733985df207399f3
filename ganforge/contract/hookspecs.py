"""The ganforge plugin contract: every hook a plugin can implement.

A plugin is a module (or any object) with functions named after these hooks and marked with
:data:`ganforge.hookimpl`. Built-in plugins (``plugins/`` in the repository, installed as
``ganforge.plugins``) and third-party packages are loaded the same way, through the
``ganforge`` entry-point group::

    [project.entry-points.ganforge]
    my_plugin = "my_package.my_module"

Hooks are called with keyword arguments only; an implementation may accept any subset of a
hook's parameters.

Component hooks receive a ``register`` callable (see :class:`ganforge.contract.manager.Register`)::

    register(name, factory, description=None)

``factory`` is called with keyword arguments when a recipe asks for ``name``; what it receives
is documented on each hook below. The recipe's ``args`` for that part are passed as extra
keyword arguments. ``description`` defaults to the first line of the factory's docstring.
Names are unique per kind: two plugins registering the same generator name is an error.

Lifecycle hooks receive the :class:`ganforge.training.engine.TrainState` of the running job. They are
called on the main process only, and their return value is ignored.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from ganforge.contract.state import TrainState
    from ganforge.contract.manager import Register

PROJECT_NAME = "ganforge"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# --------------------------------------------------------------------------------------------
# component hooks: called once, when the plugin manager builds its registry
# --------------------------------------------------------------------------------------------


@hookspec
def ganforge_register_generators(register: Register) -> None:
    """Register generator factories.

    Called once when the registry is built. Each factory is called as
    ``factory(z_dim=int, out_shape=tuple[int, ...], **args)`` and must return an
    ``nn.Module`` mapping a ``(batch, z_dim)`` noise tensor (or whatever the objective feeds it)
    to samples of shape ``(batch, *out_shape)``. ``out_shape`` is ``(C, H, W)`` for images and
    ``(D,)`` for vector data. A factory that cannot produce ``out_shape`` raises ``ValueError``
    saying which shapes it supports.

    :param register: call ``register(name, factory, description=None)`` once per generator.
    """


@hookspec
def ganforge_register_discriminators(register: Register) -> None:
    """Register discriminator factories.

    Called once when the registry is built. Each factory is called as
    ``factory(in_shape=tuple[int, ...], **args)`` and must return an ``nn.Module`` mapping
    ``(batch, *in_shape)`` samples to ``(batch,)`` or ``(batch, 1)`` *logits* (no sigmoid: the
    losses work on logits so that they are safe under mixed precision). A factory that cannot
    take ``in_shape`` raises ``ValueError`` saying which shapes it supports.

    :param register: call ``register(name, factory, description=None)`` once per discriminator.
    """


@hookspec
def ganforge_register_networks(register: Register) -> None:
    """Register networks of other kinds than generator and discriminator (an encoder, a
    classifier, a feature extractor).

    Called once when the registry is built. A system declares such a network as
    ``Network(kind="encoder", context={...}, default="mlp_encoder")``; it is built from these
    factories, called as ``factory(**context, **args)`` (the context names the factory accepts),
    from the recipe's ``networks.<name>`` or else the system's ``default`` (so a recipe need not
    name it). Returns an ``nn.Module``.

    :param register: call ``register(name, factory, description=None)`` once per network.
    """


@hookspec
def ganforge_register_recipes(register: Callable[..., None]) -> None:
    """Register recipes a plugin package ships, so that ``ganforge train NAME`` finds them.

    Called when a recipe name is looked up and by ``ganforge recipe list``, which shows each
    with its package. A recipe in ``./recipes`` or among ganforge's own of the same name comes
    first.

    :param register: call ``register(name, path)`` once per recipe, ``path`` a YAML file
        inside the package (``Path(__file__).with_name("my_recipe.yaml")``; list it as package
        data in the package's ``pyproject.toml``).
    """


@hookspec
def ganforge_register_losses(register: Register) -> None:
    """Register adversarial losses.

    Called once when the registry is built. Each factory is called as ``factory(**args)`` and
    returns an object with two methods working on discriminator logits:
    ``d_loss(real_logits, fake_logits) -> Tensor`` and ``g_loss(fake_logits) -> Tensor``
    (scalars; :class:`ganforge.plugins.losses.Loss` is a convenient base class). With
    ``uses_real_logits = True`` the systems call ``g_loss(fake_logits, real_logits)`` instead
    (D's logits on the real batch, D frozen), as the relativistic loss needs. An attribute
    ``capturable = True`` says both are tensor code only, so that the step may be captured in a
    CUDA graph (``ganforge.training.step``); without it the engine runs the eager step.

    :param register: call ``register(name, factory, description=None)`` once per loss.
    """


@hookspec
def ganforge_register_penalties(register: Register) -> None:
    """Register regularisation penalties (R1, R2, gradient penalty, path length, ...).

    Called once when the registry is built. Each factory is called as ``factory(**args)`` and
    returns a callable ``penalty(net, real, fake) -> Tensor`` giving a scalar that is added to
    the loss of a phase that penalises the network (``Phase.penalize``; ``real`` and ``fake``
    are what it was given there, ``Terms.judged``: tensors, or tuples of tensors for a network
    of several inputs). It applies to discriminators unless it sets ``network_kind =
    "generator"``; one with ``state_dict()``/``load_state_dict()`` is checkpointed. The engine applies it every ``every`` runs of that
    phase and multiplies it by ``weight * every`` (lazy regularisation, as in StyleGAN2), in
    fp32 (autocast off). ``capturable = True`` on
    the penalty object allows the CUDA-graph fast path, as for losses.

    :param register: call ``register(name, factory, description=None)`` once per penalty.
    """


@hookspec
def ganforge_register_augments(register: Register) -> None:
    """Register augmentations of what discriminators see (DiffAugment, ADA, ...).

    Called once when the registry is built. Each factory is called as ``factory(**args)`` (the
    recipe's ``augment.args``) and returns an augmentation: a callable
    ``augment(x, groups=1) -> Tensor`` that transforms a batch of images ``x`` (N, C, H, W, in
    [-1, 1]) differentiably, drawing its random numbers from torch's default generator. The
    engine applies it to every image a discriminator of the recipe's system sees while training,
    real and fake, in every phase (penalties differentiate through it); ``groups`` > 1 says the
    channels hold that many images side by side (pix2pix's input|output pairs), which must get
    the same transform. ``capturable = True`` says it is tensor code only (CUDA-graph fast path).

    An adaptive augmentation (ADA) sets ``adaptive = True`` and implements
    ``observe(real_logits)`` (called in each phase with the discriminator's detached output on
    the real images it judged; tensor code), ``update(step, reduce)`` (called after each
    training step, outside any CUDA graph; ``reduce(t)`` sums a tensor over the processes),
    ``logs() -> dict[str, Tensor]`` (logged every step), and ``state_dict()`` /
    ``load_state_dict(tensors)`` (checkpointed and restored with the run).

    :param register: call ``register(name, factory, description=None)`` once per augmentation.
    """


@hookspec
def ganforge_register_objectives(register: Register) -> None:
    """Register training objectives: adversarial systems of any number of networks.

    Called once when the registry is built. Each factory is called with keyword arguments,
    each passed only if the factory accepts it: ``loss`` (the recipe's loss object), ``z_dim``,
    ``sample_shape`` (the dataset's), ``n_critic``, ``optim`` (the recipe's ``optim`` section),
    ``dataset``, plus the recipe's ``objective.args``. It returns a
    :class:`ganforge.contract.system.GANSystem`: named networks (built by ganforge from the registry,
    each with its own recipe section), optimizers over them, the phases of one training step
    (which optimizer steps, which networks are trainable, how often, which discriminators are
    penalised), each phase's loss returning :class:`ganforge.contract.system.Terms`, persistent state,
    EMA copies and how samples are made. The built-in ``unconditional`` system is the classic
    G(z) vs data game; class-conditional GANs, pix2pix and CycleGAN are other systems, with no
    change to the engine. ``capturable = True`` on the system allows the CUDA-graph fast path.

    A factory written for plugin API 1 (taking ``generator``/``discriminator`` models) is
    refused with a message saying how to upgrade.

    :param register: call ``register(name, factory, description=None)`` once per objective.
    """


@hookspec
def ganforge_register_datasets(register: Register) -> None:
    """Register datasets.

    Called once when the registry is built. Each factory is called as
    ``factory(root=str | None, download=bool, **args)`` and returns a
    ``torch.utils.data.Dataset`` whose items are float tensors scaled to the generator's output
    range (images in [-1, 1]) or ``(sample, label)`` pairs, and which has a ``sample_shape``
    attribute; a dataset with labels says how many classes in ``num_classes`` (the
    class-conditional objectives need it). Returning a :class:`ganforge.data.TensorDataset` (data held in memory) lets the
    engine fetch whole batches at once, keep the data on the GPU and gather batches there
    (its ``fetch(indices)``) inside the CUDA-graph fast path. Missing files raise
    :class:`ganforge.errors.DatasetError` saying where the factory looked and which file names it
    expects.

    :param register: call ``register(name, factory, description=None)`` once per dataset.
    """


@hookspec
def ganforge_register_metrics(register: Register) -> None:
    """Register evaluation metrics.

    Called once when the registry is built. Each factory is called as
    ``factory(dataset=Dataset, **args)`` and returns a callable
    ``metric(samples: Tensor, dataset) -> dict[str, float]``; ``samples`` are generated
    samples on the CPU in the dataset's value range. A metric that also accepts ``labels``
    receives, for class-conditional runs, the class each sample was made for; one that accepts
    ``inputs`` receives what the system generated the samples from (its noise: for
    image-to-image systems the images translated and their known targets). The keys are
    logged as ``eval/<key>``.

    :param register: call ``register(name, factory, description=None)`` once per metric.
    """


# --------------------------------------------------------------------------------------------
# lifecycle hooks: called by the engine while it trains (main process only)
# --------------------------------------------------------------------------------------------


@hookspec
def ganforge_train_start(state: TrainState) -> None:
    """Called once after the models, optimizers and data are built and prepared, before the
    first step (also when resuming from a checkpoint: ``state.step`` is then non-zero).

    :param state: the running job; ``state.config`` is the full recipe.
    """


@hookspec
def ganforge_step_end(state: TrainState, logs: dict[str, Any]) -> None:
    """Called after every training step (every phase of the system: for the classic GAN,
    ``n_critic`` discriminator updates and one generator update).

    :param state: the running job; ``state.step`` counts completed training steps.
    :param logs: the step's scalar values (``loss_<phase>`` such as ``loss_d``, ``loss_g``,
        and what the phases log: ``d_real``, ``d_fake``, penalties, ...) as Python floats. They are only materialised on log steps; on other steps ``logs``
        is empty to avoid a device synchronisation per step.
    """


@hookspec
def ganforge_checkpoint_saved(state: TrainState, path: str) -> None:
    """Called after a checkpoint has been completely written and renamed into place.

    :param state: the running job.
    :param path: the checkpoint folder.
    """


@hookspec
def ganforge_train_end(state: TrainState) -> None:
    """Called once when training stops, normally or by interruption, after the last checkpoint
    and plots are written.

    :param state: the running job; ``state.step`` is the last completed step.
    """
