"""Rules of generation shared by the engines and the endpoints: function calling (``tools``) and
the token budget and structured output of a request (``params``). Plain Python, no Ray, no HTTP."""
