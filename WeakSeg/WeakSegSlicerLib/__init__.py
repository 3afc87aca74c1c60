"""The parts of the WeakSeg Slicer module beside ``WeakSeg.py``; all but ``panel`` need no Qt and are
tested with ``slicer-core``.

The Widget, the Logic and the Segment Editor effect only wire the UI to these modules:

* :mod:`~WeakSegSlicerLib.runner`        one job at a time: start, poll, finish, keep the model, tidy up;
* :mod:`~WeakSegSlicerLib.sessions`      training and prediction in a background worker process;
* :mod:`~WeakSegSlicerLib.process`       the worker subprocess: Python, command, environment, Cancel;
* :mod:`~WeakSegSlicerLib.charts`        the loss-curve table and chart nodes, the ETA text;
* :mod:`~WeakSegSlicerLib.tables`        the cases and priors tables;
* :mod:`~WeakSegSlicerLib.models`        model folders: compatible classes, Save model;
* :mod:`~WeakSegSlicerLib.dependencies`  requirements not installed yet, installing them on first use;
* :mod:`~WeakSegSlicerLib.gpu`           the GPU name for the device selector;
* :mod:`~WeakSegSlicerLib.selftest`      the module's self-test (WeakSegTest) and its phantom;
* :mod:`~WeakSegSlicerLib.sample_data`   the case of the Sample Data module;
* :mod:`~WeakSegSlicerLib.panel`         the Qt wiring of the module panel's tables and selectors.

Modules are imported one by one (``from WeakSegSlicerLib.gpu import describe_gpu``): some need packages
that the module installs on first use (psutil), so importing this package imports nothing.
"""
