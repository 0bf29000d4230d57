"""The ``/v1/pipelines`` tasks (summarize, translate, entities, analyze, moderated chat): the
protocol models, the task rules composed over the ingress's operations, and the router."""
