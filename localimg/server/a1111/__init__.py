"""The AUTOMATIC1111 API under /sdapi/v1 (and the sd-webui-controlnet bits it carries).

`routes` has txt2img, img2img, progress, interrupt and the route table; `schemas` the request
bodies and A1111's error shapes, `samplers` A1111's sampler and scheduler names, `options` the
model and option routes, `images` img2img's inputs and saved files, `info` the `info` string,
`state` the current model and the run that /progress reports.
"""
