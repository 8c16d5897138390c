"""HTML pages for people, shared by `pdac detect --report` (pdac.infer) and `pdac evaluate` (pdac.evaluation):
the page skeleton (`page`) and the per-case viewer (`viewer`, with the vendored NiiVue in `vendor/`).

This room sits below both of its users and imports only the shared modules (config, labels, errors):
it speaks SimpleITK images, numbers and strings, never pipeline objects."""
