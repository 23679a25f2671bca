"""Analytic infinite-width NNGP and NTK of neural networks, layer by layer (`import ntkit.nn as stax`).

Each layer unpacks as `init_fn, apply_fn, kernel_fn`, as in neural-tangents' `stax`: `init_fn` and `apply_fn`
build the finite network, `kernel_fn` its infinite-width kernels (docs/theory.md §2).
"""

from ._attention import GlobalSelfAttention as GlobalSelfAttention
from ._combinators import FanInConcat as FanInConcat
from ._combinators import FanInProd as FanInProd
from ._combinators import FanInSum as FanInSum
from ._combinators import FanOut as FanOut
from ._combinators import Identity as Identity
from ._combinators import parallel as parallel
from ._combinators import repeat as repeat
from ._combinators import serial as serial
from ._conv import Conv as Conv
from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._elementwise import ABRelu as ABRelu
from ._elementwise import Abs as Abs
from ._elementwise import Cos as Cos
from ._elementwise import Elementwise as Elementwise
from ._elementwise import ElementwiseNumerical as ElementwiseNumerical
from ._elementwise import Erf as Erf
from ._elementwise import Exp as Exp
from ._elementwise import Gaussian as Gaussian
from ._elementwise import Gelu as Gelu
from ._elementwise import LeakyRelu as LeakyRelu
from ._elementwise import Monomial as Monomial
from ._elementwise import Polynomial as Polynomial
from ._elementwise import Rbf as Rbf
from ._elementwise import RectifiedMonomial as RectifiedMonomial
from ._elementwise import Relu as Relu
from ._elementwise import Sigmoid_like as Sigmoid_like
from ._elementwise import Sign as Sign
from ._elementwise import Sin as Sin
from ._elementwise import gauss_hermite_2d as gauss_hermite_2d
from ._layer import Layer as Layer
from ._normalization import LayerNorm as LayerNorm
from ._pooling import AvgPool as AvgPool
from ._pooling import Flatten as Flatten
from ._pooling import GlobalAvgPool as GlobalAvgPool
from ._pooling import GlobalSumPool as GlobalSumPool
from ._pooling import SumPool as SumPool
from ._state import KernelState as KernelState
