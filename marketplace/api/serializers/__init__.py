"""The API's wire format, one module per resource, beside the resource's views.

Serializers only check the shape of input and render output; every decision about
money or state is made by a service. Class names are OpenAPI component names: keep them
unique across the modules.
"""
