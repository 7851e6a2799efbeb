from dual.protocols.protocol_phantom import ProtDualPhantom
from dual.protocols.protocol_train import ProtDualTrain
from dual.protocols.protocol_import_model import ProtDualImportModel
from dual.protocols.protocol_denoise import ProtDualDenoise
from dual.protocols.protocol_simulate import ProtDualSimulate
from dual.protocols.protocol_pick import ProtDualPick
from dual.protocols.protocol_wedge import ProtDualWedge
