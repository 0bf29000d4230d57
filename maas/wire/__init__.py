"""The wire layer: request/response schemas, errors and their HTTP mapping, the request guard,
API keys and admission, and the assembly of OpenAI responses and chunks."""
