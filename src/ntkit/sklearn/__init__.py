"""Kernel methods with any architecture: scikit-learn kernels and estimators from infinite-width networks.

* `NTKernel`, `NNGPKernel`: `sklearn.gaussian_process.kernels.Kernel`s usable in Gaussian processes, SVMs
  (`SVC(kernel=NTKernel())`), kernel ridge regression and sums/products with scikit-learn's kernels, with `W_std`
  and `b_std` as hyperparameters with exact gradients;
* `NTKRegressor`, `NTKClassifier`: the infinitely wide network trained by gradient descent on the mean squared
  loss (the mean of the infinite ensemble) as scikit-learn estimators.

Needs scikit-learn (`pip install 'ntkit[sklearn]'`).
"""

from ._estimators import NTKClassifier as NTKClassifier
from ._estimators import NTKRegressor as NTKRegressor
from ._kernels import NNGPKernel as NNGPKernel
from ._kernels import NTKernel as NTKernel
