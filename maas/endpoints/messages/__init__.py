"""Anthropic's Messages API: ``/v1/messages`` and ``/v1/messages/count_tokens``, over the chat path:
the protocol models, the conversion to and from chat, the stream's events, the error body and the
router."""
