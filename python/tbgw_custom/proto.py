"""The gRPC messages of tbgw's connector API, built at run time from the descriptor of
messages.proto (no generated code, no protoc), in a private descriptor pool so that an
upstream package loaded in the same process (with its own messages.proto) does not clash."""

import base64

from google.protobuf import descriptor_pb2, descriptor_pool

from ._descriptor import SERIALIZED_BASE64

_pool = descriptor_pool.DescriptorPool()
_file = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(SERIALIZED_BASE64))
_pool.Add(_file)


def _message_class(name):
    desc = _pool.FindMessageTypeByName("messages." + name)
    try:
        from google.protobuf.message_factory import GetMessageClass
        return GetMessageClass(desc)
    except ImportError:  # protobuf < 4.22
        from google.protobuf.message_factory import MessageFactory
        return MessageFactory(_pool).GetPrototype(desc)


FromConnectorMessage = _message_class("FromConnectorMessage")
FromServiceMessage = _message_class("FromServiceMessage")
KeyValueProto = _message_class("KeyValueProto")

# enum values (as in messages.proto)
UNKNOWN, SUCCESS, NOT_FOUND, FAILURE = 0, 1, 2, 3
BOOLEAN_V, LONG_V, DOUBLE_V, STRING_V, JSON_V = 0, 1, 2, 3, 4

SERVICE = "messages.TBGatewayProtoService"
SESSION_METHOD = f"/{SERVICE}/session"
