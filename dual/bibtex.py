"""
@article{Zeng2023DUAL,
title = {DUAL: deep unsupervised simultaneous simulation and denoising for cryo-electron tomography},
author = {Zeng, Xiangrui and Ding, Yizhe and Zhang, Yueqian and Uddin, Mostofa Rafid and Dabouei, Ali and Xu, Min},
journal = {bioRxiv (preprint)},
year = {2024},
doi = {10.1101/2024.03.02.583135}
}

@article{Gubins2021SHREC,
title = {SHREC 2021: Classification in cryo-electron tomograms},
author = {Gubins, Ilja and Chaillet, Marten L. and van der Schot, Gijs and others},
journal = {Eurographics Workshop on 3D Object Retrieval},
year = {2021},
doi = {10.2312/3dor.20211307}
}
"""
