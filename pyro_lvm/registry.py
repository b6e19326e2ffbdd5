"""Components register by name with their own option schema; configs name them; ``build`` replaces if/elif dispatch.

One ``Registry`` per kind of component (dataset, network, prior, likelihood, model, guide, ELBO, optimiser), all
defined here, on the ground floor, so that ``config`` can ask for names and schemas without importing a component
module. Each registry knows the module that holds its built-in components and imports it, by name, the first time
it is asked (the way plugin entry points are loaded): a lookup, not a code dependency of this layer. A user's own
module registers more with the ``register_*`` decorators (``pyro_lvm.register_prior`` ...) and is named in the
config's ``plugins = [...]`` (``load_plugins``).

A component's options are a pydantic model deriving from the registry's base schema (``Options`` for most;
``DataOptions``-style bases for kinds with options every member shares). ``schema(name)`` adds ``name`` as a
literal, so a section validates against the schema of the component it names, like a discriminated union on
``name`` whose members are whatever is registered at the time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from pyro_lvm.errors import PyroLVMError

T = TypeVar("T")


# Layer widths: positive, and small enough that one layer is not a request for gigabytes (a 65,536 x 65,536 float32
# layer is 17 GB already); the bound stops a typo before torch's allocator does, with a message.
MAX_WIDTH = 65_536
Widths = list[Annotated[int, Field(gt=0, le=MAX_WIDTH)]]
# Seeds: what every generator takes (torch's refuses beyond 64 bits, and derived seeds such as seed * 1_000_003 must
# stay within them), so a seed of 2**64 is one line at validation, not an overflow in the middle of a run.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class Options(BaseModel):
    """Base of every component's option schema: unknown keys are refused, assignments are validated, and values
    are taken as typed (strict: "20" or true is not an integer)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of the component's factory (``name`` left out)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "name"}


class Registry(Generic[T]):
    """A name -> (factory, option schema) table for one kind of component (``prior``, ``guide``, ...)."""

    def __init__(self, kind: str, default: str, builtins: str | None = None) -> None:
        self.kind = kind
        self.default = default  # the component a config section without ``name`` gets
        self.base: type[Options] = Options  # set by the built-in module where members share options
        self._builtins = builtins
        self._factories: dict[str, Callable[..., T]] = {}
        self._schemas: dict[str, type[Options]] = {}
        self._traits: dict[str, dict[str, Any]] = {}

    def _load(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None  # first, so that the import's own lookups do not recurse
            try:
                importlib.import_module(module)
            except BaseException:
                self._builtins = module  # a failed import is retried, not remembered as an empty registry
                raise

    def register(
        self, name: str, options: type[Options] | None = None, **traits: Any
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``factory`` under ``name``; ``options`` is its schema (default: the kind's base);
        ``traits`` are facts a config check needs before anything is built (e.g. a model's ``recipe``)."""
        self._load()
        if options is not None and not (isinstance(options, type) and issubclass(options, self.base)):
            raise PyroLVMError(
                f"{self.kind} {name!r}: options must be a subclass of {self.base.__module__}.{self.base.__name__}"
            )

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            old = self._factories.get(name)
            # The same factory again (its module re-imported, e.g. a plugin named twice) is not a second name.
            if old is not None and (old.__module__, old.__qualname__) != (factory.__module__, factory.__qualname__):
                raise PyroLVMError(
                    f"{self.kind} {name!r} is registered twice ({old.__module__}.{old.__qualname__} and "
                    f"{factory.__module__}.{factory.__qualname__}); choose another name"
                )
            self._factories[name] = factory
            self._traits[name] = dict(traits)
            self._schemas[name] = create_model(  # type: ignore[call-overload]
                f"{self.kind}_{name}_options",
                __base__=options or self.base,
                name=(Literal[name], name),  # type: ignore[valid-type]
            )
            return factory

        return decorate

    def names(self) -> list[str]:
        self._load()
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._factories

    def _unknown(self, name: str) -> PyroLVMError:
        return PyroLVMError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {', '.join(self.names())}")

    def get(self, name: str) -> Callable[..., T]:
        self._load()
        if name not in self._factories:
            raise self._unknown(name)
        return self._factories[name]

    def schema(self, name: str) -> type[Options]:
        """The option schema of component ``name`` (its fields, plus ``name`` as a literal)."""
        self._load()
        if name not in self._schemas:
            raise self._unknown(name)
        return self._schemas[name]

    def trait(self, name: str, key: str, default: Any = None) -> Any:
        """A fact registered with component ``name`` (``register(name, ..., key=value)``), or ``default``."""
        self._load()
        if name not in self._factories:
            raise self._unknown(name)
        return self._traits[name].get(key, default)

    def owner_of(self, key: str) -> list[str]:
        """The registered components that accept option ``key`` (for error messages)."""
        return [n for n in self.names() if key in self._schemas[n].model_fields]

    def build(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)


DATASETS: Registry[Any] = Registry("dataset", "digits", "pyro_lvm.data")  # datasets.py and files.py
NETWORKS: Registry[Any] = Registry("network", "mlp", "pyro_lvm.nn.nets")
PRIORS: Registry[Any] = Registry("prior", "standard_normal", "pyro_lvm.models.priors")
LIKELIHOODS: Registry[Any] = Registry("likelihood", "bernoulli", "pyro_lvm.models.likelihoods")
MODELS: Registry[Any] = Registry("model", "vae", "pyro_lvm.models.vae")
GUIDES: Registry[Any] = Registry("guide", "amortized", "pyro_lvm.guides")
ELBOS: Registry[Any] = Registry("elbo", "trace", "pyro_lvm.infer.elbos")
OPTIMS: Registry[Any] = Registry("optimiser", "adam", "pyro_lvm.infer.optim")

# config section -> the registry whose component it names
SECTIONS: dict[str, Registry[Any]] = {
    "data": DATASETS,
    "model": MODELS,
    "prior": PRIORS,
    "likelihood": LIKELIHOODS,
    "guide": GUIDES,
    "elbo": ELBOS,
    "optim": OPTIMS,
}


_KEYWORDS = "called with its options and the experiment's sizes as keyword arguments (accept ``**_`` for the rest)"
_CALLS = {
    "dataset": "called with its validated options object (``DataOptions`` fields included); returns (train Split, "
    "test Split or None, image_shape or None, num_classes) with flat float rows (``pyro_lvm.data.datasets``)",
    "network": "called as ``f(n_in=, n_out=, hidden=)``; returns an ``nn.Module`` mapping (..., n_in) to (..., n_out)",
    "prior": f"a PyroModule {_KEYWORDS} (latent_dim, cond_dim, num_features); ``forward(c)`` returns p(z | c)",
    "likelihood": f"a PyroModule {_KEYWORDS}; ``forward(decoder_output)`` returns p(x | ...), event dim 1",
    "model": f"{_KEYWORDS} (prior, likelihood, decoder, num_features, ...; ``ModelOptions`` fields included); "
    "``recipe=NAME`` names how it trains (``pyro_lvm.training.recipes``: plain, semi_supervised; default plain)",
    "guide": f"a PyroModule {_KEYWORDS} (num_features, latent_dim, cond_dim, num_data) with the model's signature; "
    "``infers_labels=True`` for a guide of the label too (the semi-supervised recipe's)",
    "elbo": f"{_KEYWORDS} (``ElboOptions`` fields); returns a Pyro ELBO",
    "optimiser": f"{_KEYWORDS} (``modules`` to optimise); returns an object with zero_grad, step, state_dict, "
    "load_state_dict and description",
}


def _decorator(registry: Registry[Any]) -> Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]]:
    def register(name: str, options: type[Options] | None = None, **traits: Any):
        return registry.register(name, options, **traits)

    register.__name__ = f"register_{registry.kind}"
    register.__doc__ = (
        f"Register a {registry.kind} under ``name``: {_CALLS[registry.kind]}. ``options`` is a pydantic subclass "
        f"of the kind's base schema (``pyro_lvm.Options`` or the kind's own base) naming the options the config "
        f"section may set; without it the component takes the base options only."
    )
    return register


register_dataset = _decorator(DATASETS)
register_network = _decorator(NETWORKS)
register_prior = _decorator(PRIORS)
register_likelihood = _decorator(LIKELIHOODS)
register_model = _decorator(MODELS)
register_guide = _decorator(GUIDES)
register_elbo = _decorator(ELBOS)
register_optimiser = _decorator(OPTIMS)


def load_plugins(modules: list[str]) -> None:
    """Import the user's modules that register components (``plugins = ["my_lvm"]`` in the config).

    A module is found as Python finds any import: on ``sys.path`` (the current folder for the CLI)."""
    for module in modules:
        if not isinstance(module, str) or not all(part.isidentifier() for part in module.split(".")):
            raise PyroLVMError(f"plugin {module!r} is not a module name; write it as for import, e.g. 'my_lvm'")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is not None and (err.name == module or module.startswith(err.name + ".")):
                raise PyroLVMError(
                    f"plugin module {module!r} not found; put {module.replace('.', '/')}.py in the current folder "
                    "or on PYTHONPATH, or remove it from 'plugins'"
                ) from None
            raise PyroLVMError(f"plugin module {module!r} could not be imported: {err}") from None
        except Exception as err:  # noqa: BLE001 - the plugin's own failure (a bug or a syntax error in it), in one line
            summary = str(err).splitlines()[0] if str(err) else ""
            raise PyroLVMError(
                f"plugin module {module!r} failed while importing: {type(err).__name__}: {summary}; fix it or remove "
                "it from 'plugins' / --plugin"
            ) from None
