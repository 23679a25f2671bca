"""Analytic infinite-width NNGP and NTK of neural networks, layer by layer (`import ntkit.nn as stax`).

Each layer unpacks as `init_fn, apply_fn, kernel_fn`, as in neural-tangents' `stax`: `init_fn` and `apply_fn`
build the finite network, `kernel_fn` its infinite-width kernels (docs/theory.md §2).
"""

from ._aggregate import Aggregate as Aggregate
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
from ._conv_local import ConvLocal as ConvLocal
from ._conv_transpose import ConvTranspose as ConvTranspose
from ._custom import Bool as Bool
from ._custom import Diagonal as Diagonal
from ._custom import FunctionLayer as FunctionLayer
from ._custom import layer as layer
from ._custom import requires as requires
from ._custom import supports_masking as supports_masking
from ._dense import Dense as Dense
from ._dot_general import DotGeneral as DotGeneral
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
from ._enums import AggregateImplementation as AggregateImplementation
from ._enums import AttentionMechanism as AttentionMechanism
from ._enums import Padding as Padding
from ._enums import PositionalEmbedding as PositionalEmbedding
from ._indexing import Index as Index
from ._indexing import Slice as Slice
from ._layer import Layer as Layer
from ._masking import MaskedArray as MaskedArray
from ._masking import unmask_fn as unmask_fn
from ._normalization import LayerNorm as LayerNorm
from ._nt_activations import ExpNormalized as ExpNormalized
from ._nt_activations import Gabor as Gabor
from ._nt_activations import Hermite as Hermite
from ._pooling import AvgPool as AvgPool
from ._pooling import Flatten as Flatten
from ._pooling import GlobalAvgPool as GlobalAvgPool
from ._pooling import GlobalSumPool as GlobalSumPool
from ._pooling import SumPool as SumPool
from ._resize import ImageResize as ImageResize
from ._state import KernelState as KernelState
