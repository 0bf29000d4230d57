"""The protocol layer: the OpenAI wire pieces shared by several endpoint families and the
engines (base models, chat messages and tools, generation parameters and results), and the error
hierarchy with its one mapping to the OpenAI error body. No Ray, no FastAPI."""
