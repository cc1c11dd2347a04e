"""evalkit from Python: ``evalkit.load(model)`` then ``.caption(images)``, ``.ask(images, questions)``,
``.chat(image)``; each returns plain frozen records (:mod:`evalkit.api.records`)."""

from evalkit.api.conversation import Conversation
from evalkit.api.model import Model, load
from evalkit.api.records import Answer, Caption, ChatTurn

__all__ = ["Answer", "Caption", "ChatTurn", "Conversation", "Model", "load"]
