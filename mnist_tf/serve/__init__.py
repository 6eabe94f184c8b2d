"""`mnist-tf serve`: TF Serving's REST and gRPC APIs and a draw-a-digit page, for trying a model locally.

holder.py   loads the models' versions, picks up newer ones and config changes, runs signatures off the event loop
model_config.py TF Serving's --model_config_file: models, version policies, labels
metrics.py  TF Serving's Prometheus metrics, for both APIs
status.py   a refused request: TF Serving's status code, its HTTP status, the message
predict.py  the checks both APIs make on a predict request, then the batched model call
rest.py     TF Serving's JSON request and response formats and error messages
limits.py   per-request limits (body size, instances, image pixels)
app.py      the Starlette routes
grpc_api.py PredictionService and ModelService on grpc.aio, on the same event loop
server.py   uvicorn and the gRPC server in one process, the access log, clean shutdown
process.py  the server as a child process, for the load benchmark and the tests
static/     the page: index.html, app.js, style.css

The client side (`mnist-tf predict --server`) is `inference.client`; the load benchmark is
`benchmark.serve_load`.
"""
