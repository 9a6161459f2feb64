"""Prompts as token ids: the model's own chat template, or a raw completion prompt.

Chat prompts are rendered with the Jinja template stored in the GGUF
(``tokenizer.chat_template``) through llama-cpp-python's ``Jinja2ChatFormatter``,
and tokenized with special tokens parsed and no BOS added, exactly as
``Llama.create_chat_completion`` does, so the local backend and llama-cpp-python
see the same prompt for the same messages.
"""

from __future__ import annotations

from typing import Any, cast

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from batchd.backends.local.errors import RequestError
from batchd.backends.local.llamacpp import LlamaRuntime


class PromptBuilder:
    """Turns messages or prompts into token ids for one model."""

    def __init__(self, rt: LlamaRuntime, model: str) -> None:
        self._rt = rt
        self._model = model
        template = rt.chat_template()
        self._formatter = (
            Jinja2ChatFormatter(
                template=template,
                eos_token=rt.token_text(rt.eos),
                bos_token=rt.token_text(rt.bos),
                add_generation_prompt=True,
            )
            if template
            else None
        )

    def chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """The prompt of a chat completion: template rendered, then tokenized."""
        if self._formatter is None:
            raise RequestError(
                f"Model {self._model!r} has no chat template; use /v1/completions.",
                param="model",
            )
        try:
            text = self._formatter(messages=cast(Any, messages)).prompt
        except Exception as exc:  # the template may raise anything (raise_exception, jinja)
            raise RequestError(
                f"The chat template of {self._model!r} rejected these messages: {exc}",
                param="messages",
            ) from None
        return self._rt.tokenize(text, add_special=False, parse_special=True)

    def completion(self, prompt: str | list[int]) -> list[int]:
        """The prompt of a text completion (a string, or token ids as given)."""
        if isinstance(prompt, list):
            bad = next((t for t in prompt if not 0 <= t < self._rt.n_vocab), None)
            if bad is not None:
                raise RequestError(
                    f"Token id {bad} is outside the vocabulary (0..{self._rt.n_vocab - 1}).",
                    param="prompt",
                )
            return list(prompt)
        tokens = self._rt.tokenize(prompt, add_special=True, parse_special=True)
        if not tokens:
            # Something must be decoded to get the first logits; llama-cpp-python
            # starts an empty prompt from BOS as well.
            tokens = [self._rt.bos if self._rt.bos >= 0 else self._rt.eos]
        return tokens
