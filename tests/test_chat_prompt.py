"""Chat-style multi-turn prompts: earlier turns kept, oldest dropped first to fit the context."""

from evalkit.core.protocol import GenerationProtocol
from evalkit.inference.chat_runner import chat_prompt

CHAT = GenerationProtocol(prompt="Question: {question} Answer:", chat=True)


def words(text: str) -> int:
    return len(text.split())


def test_history_is_in_the_prompt():
    prompt, kept = chat_prompt(CHAT, [("how many cats?", "two")], "where are they?", words, budget=100)
    assert prompt == "Question: how many cats? Answer: two. Question: where are they? Answer:"
    assert kept == 1


def test_oldest_turns_are_dropped_first_to_fit():
    history = [(f"q{i}", f"a{i}") for i in range(10)]
    prompt, kept = chat_prompt(CHAT, history, "last?", words, budget=13)
    assert words(prompt) <= 13 and kept == 2  # 2 turns x 4 words + 3 words
    assert prompt.startswith("Question: q8 Answer: a8.") and prompt.endswith("Question: last? Answer:")


def test_braces_in_questions_are_kept():
    prompt, _ = chat_prompt(CHAT, [], "what is {x}?", words, budget=50)
    assert prompt == "Question: what is {x}? Answer:"
