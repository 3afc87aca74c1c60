"""The parts of the WeakSeg Slicer module that need no Qt, tested with ``slicer-core``.

The Widget, the Logic and the Segment Editor effect only wire the UI to these modules:

* :mod:`~WeakSegSlicerLib.sessions`      training and prediction in a background worker process;
* :mod:`~WeakSegSlicerLib.process`       the worker subprocess: Python, command, environment, Cancel;
* :mod:`~WeakSegSlicerLib.charts`        the loss-curve table and chart nodes, the ETA text;
* :mod:`~WeakSegSlicerLib.tables`        the cases and priors tables;
* :mod:`~WeakSegSlicerLib.models`        model folders: compatible classes, Save model;
* :mod:`~WeakSegSlicerLib.dependencies`  requirements not installed yet;
* :mod:`~WeakSegSlicerLib.gpu`           the GPU name for the device selector.

Modules are imported one by one (``from WeakSegSlicerLib.gpu import describe_gpu``): some need packages
that the module installs on first use (psutil), so importing this package imports nothing.
"""
