"""Flow-matching sampling for Ovi: the joint video+audio loop and what it is made of.

* :mod:`.av`: :func:`~.av.sample_av`, one clip from noise (seeded), the first frame and guides;
* :mod:`.settings`: :class:`~.settings.SamplingSettings`, the settings of a run in one value;
* :mod:`.joint`: the CFG denoiser (per-stream scales, skip-layer guidance) and the joint solver loop;
* :mod:`.solvers`, :mod:`.schedules`: UniPC, Euler, DPM++ and their sigma schedules;
* :mod:`.guides`: guides, clean latents + masks of either stream (image->AV, audio->video, redo, long-clip seams);
* :mod:`.checks`: checks of the sampling arguments;
* :mod:`.fast`, :mod:`.cfg_cache`, :mod:`.step_cache`: speed presets, CFG reuse, step cache.
"""
