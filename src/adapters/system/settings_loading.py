"""Reading a settings class from the environment the way an operator needs it: one line for
each mistake (a bad value, a misspelt name, an unreadable secret file, a directory the worker
cannot write), never a traceback. The composition root names the class; this does the rest.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from python_worker.adapters.system import environment

S = TypeVar("S", bound=BaseSettings)


class ConfigurationError(Exception):
    """Raised when a setting is bad; the message is the one line shown to the operator."""


def load(model: type[S], overrides: Mapping[str, Any]) -> S:
    """`model` read from the environment, with `overrides`; raises `ConfigurationError`.

    A variable with one of the settings' prefixes that is no setting is taken for a typo, and
    every secret may come from a file instead, named by NAME_FILE (`environment`).
    """
    known = setting_names(model)
    unknown = environment.unknown_settings(os.environ, known, setting_prefixes(model))
    if unknown:
        guess = environment.closest_name(unknown[0], known)
        if guess is not None:
            raise ConfigurationError(f"unknown setting {unknown[0]} — did you mean {guess}?")
        raise ConfigurationError(
            f"unknown setting {unknown[0]} — no setting has a name like it; the README's "
            '"Configuration" lists them all'
        )
    try:
        from_files = environment.read_secret_files(os.environ, secret_names(model))
    except environment.SecretFileError as exc:
        credential = exc.variable.removesuffix("_FILE").lower().replace("_", "-")
        raise ConfigurationError(
            f"configuration error: {exc}"
            f" (example: {exc.variable}=/run/credentials/python-worker.service/{credential})"
        ) from None
    try:
        values: dict[str, Any] = {name.lower(): value for name, value in from_files.items()}
        return model(**(values | dict(overrides)))
    except ValidationError as exc:
        raise ConfigurationError(_describe(model, exc)) from None


def secret_names(model: type[BaseSettings]) -> set[str]:
    """The variables of `model` whose values are secrets (`SecretStr` fields)."""
    return {
        name.upper()
        for name, info in model.model_fields.items()
        if "SecretStr" in repr(info.annotation)
    }


def setting_names(model: type[BaseSettings]) -> set[str]:
    """Every variable `model` reads: each setting, and NAME_FILE for each secret."""
    return {name.upper() for name in model.model_fields} | {
        f"{name}_FILE" for name in secret_names(model)
    }


def setting_prefixes(model: type[BaseSettings]) -> tuple[str, ...]:
    """The first words of the settings' names (`RABBITMQ_`, `WORKER_`, …): a variable starting
    with one of them that is no setting is taken for a typo."""
    return tuple(sorted({name.split("_")[0].upper() + "_" for name in model.model_fields}))


def directory_error(
    model: type[BaseSettings], variable: str, directory: Path, exc: Exception
) -> ConfigurationError:
    """The line for a directory setting the worker cannot create or write."""
    examples = model.model_fields[variable.lower()].examples or [""]
    # SQLite says only "unable to open database file" where the directory itself is the problem.
    writable = not directory.is_dir() or os.access(directory, os.W_OK)
    reason = _reason(exc) if writable else "read-only, or no write permission for this user"
    return ConfigurationError(
        f"configuration error: {variable}={str(directory)!r}: cannot be created or written "
        f"({reason}) (example: {variable}={examples[0]})"
    )


def directory_in_use(variable: str, directory: Path, holder: str) -> ConfigurationError:
    """The line for a directory setting another running worker already uses."""
    return ConfigurationError(
        f"configuration error: {variable}={str(directory)!r}: in use by another running worker "
        f"({holder}); give each worker on this machine a directory of its own"
    )


def _describe(model: type[BaseSettings], exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    if not error["loc"]:
        # A rule across settings (a mixin's model validator): its message names them all.
        return f"configuration error: {error['msg'].removeprefix('Value error, ')}"
    field = str(error["loc"][0])
    name = field.upper()
    info = model.model_fields.get(field)
    secret = name in secret_names(model)
    value = "" if secret or error["input"] is None else f"={error['input']!r}"
    problem = error["msg"].removeprefix("Value error, ")
    example = ""
    if info is not None and info.examples:
        example = f" (example: {name}={info.examples[0]})"
    return f"configuration error: {name}{value}: {problem[:1].lower()}{problem[1:]}{example}"


def _reason(exc: BaseException) -> str:
    """What the operating system or SQLite said, without our own wrapping."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause)
