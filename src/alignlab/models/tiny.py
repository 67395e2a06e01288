"""A tiny randomly initialised Llama with its own BPE tokenizer, built offline in about a second.

Example: ``path = init_tiny_model("runs/tiny"); model = AutoModelForCausalLM.from_pretrained(path)``

For tests, the demo and smoke runs: a real Hugging Face folder (config, safetensors, tokenizer
with a ChatML template) that every loader in alignlab reads like any downloaded checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alignlab.models.tokenizers import train_bpe_tokenizer

CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Paris is the capital of France, and Rome is the capital of Italy.",
    "She sold seashells by the seashore on a sunny Sunday morning.",
    "Please answer the question briefly, honestly and politely.",
    "I am not sure about that, but I think the answer is probably yes.",
    "Thank you for your help! You're welcome, happy to help.",
    "The meeting starts at 9:30 and ends at 11:00 on Tuesday.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024.",
    "Cats sleep for most of the day, while dogs like to play outside.",
    "Plants need sunlight, water and air to grow strong and green.",
    "The library opens early in the morning and closes late at night.",
    "He wrote a short poem about the moon, the stars and the sea.",
    "Good code is clear, tested and easy to change.",
    "It is raining today, so take an umbrella when you go out.",
    "Question: What is two plus two? Answer: Two plus two is four.",
    "Question: What color is the sky? Answer: The sky is usually blue.",
    "Question: Who wrote Hamlet? Answer: William Shakespeare wrote Hamlet.",
    "Question: How many days are in a week? Answer: There are seven days in a week.",
    "User: Can you recommend a good book? Assistant: Try 'The Hobbit' by J. R. R. Tolkien.",
    "User: How do I boil an egg? Assistant: Put it in boiling water for about nine minutes.",
    "User: Tell me a joke. Assistant: Why did the scarecrow win an award? "
    "He was outstanding in his field.",
    "User: Is it safe to eat raw chicken? Assistant: No, cook chicken thoroughly before eating it.",
    "User: Translate 'hello' into Spanish. Assistant: 'Hello' in Spanish is 'hola'.",
    "User: What's the weather like? Assistant: I can't check live weather, sorry.",
    "User: Summarize this text. Assistant: Sure, here is a short summary.",
    "System: You are a helpful, harmless and honest assistant.",
    "Step 1: read the problem. Step 2: solve it. Step 3: check the answer.",
    "def add(a, b):\n    return a + b\n",
    "Lists can hold items: apples, bananas, cherries; or dates?",
    "\"Quotes\", (parentheses), [brackets] and {braces} appear in text too.",
    "The results improved by 12.5% after the second experiment.",
    "Always be kind to others, even when it is hard.",
    "Once upon a time, a small robot learned to paint sunsets.",
    "Mountains rise above the clouds; rivers run down to the ocean.",
)
"""Varied English with chat-like turns, so common words are single tokens; fixed for determinism."""


def init_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 128,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised ``LlamaForCausalLM`` and its tokenizer to ``out_dir``.

    The tokenizer is trained on :data:`CORPUS` (byte-level BPE, ChatML template, BOS added, EOS
    ``<|im_end|>``, a separate pad token); the model's vocabulary is exactly the tokenizer's.
    Weights are float32 and depend only on the arguments: the same seed writes a byte-identical
    ``model.safetensors``. The global random state of the caller is left untouched.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=vocab_size, min_frequency=1)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
