"""Writing what a model produces: files by output type, evaluation samples, the codes file.

* ``files``: one ``adapter.postprocess`` output per file (``.png``, ``.txt``, ``.wav``,
  ``.npy``, ``.json``), chosen by the output's type; WAV writing;
* ``samples``: evaluation samples a person can look at (PNG grids, text files, WAV files);
* ``codes_file``: the JSON file of codes that ``mmvq encode`` writes and ``mmvq decode`` reads.
"""
