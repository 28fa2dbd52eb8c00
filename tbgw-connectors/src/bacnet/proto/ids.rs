//! Names of BACnet object types and property identifiers (ASHRAE 135 clause 21), in
//! bacpypes3's camelCase spelling that upstream's config uses. Names are matched ignoring
//! case, `-` and `_`, so `analog-value`, `analogValue` and `ANALOG_VALUE` are one type; a
//! number is accepted for anything not listed (proprietary types and properties).

/// Object types: (number, name).
pub const OBJECT_TYPES: &[(u16, &str)] = &[
    (0, "analogInput"),
    (1, "analogOutput"),
    (2, "analogValue"),
    (3, "binaryInput"),
    (4, "binaryOutput"),
    (5, "binaryValue"),
    (6, "calendar"),
    (7, "command"),
    (8, "device"),
    (9, "eventEnrollment"),
    (10, "file"),
    (11, "group"),
    (12, "loop"),
    (13, "multiStateInput"),
    (14, "multiStateOutput"),
    (15, "notificationClass"),
    (16, "program"),
    (17, "schedule"),
    (18, "averaging"),
    (19, "multiStateValue"),
    (20, "trendLog"),
    (21, "lifeSafetyPoint"),
    (22, "lifeSafetyZone"),
    (23, "accumulator"),
    (24, "pulseConverter"),
    (25, "eventLog"),
    (26, "globalGroup"),
    (27, "trendLogMultiple"),
    (28, "loadControl"),
    (29, "structuredView"),
    (30, "accessDoor"),
    (31, "timer"),
    (39, "bitstringValue"),
    (40, "characterstringValue"),
    (41, "datePatternValue"),
    (42, "dateValue"),
    (43, "datetimePatternValue"),
    (44, "datetimeValue"),
    (45, "integerValue"),
    (46, "largeAnalogValue"),
    (47, "octetstringValue"),
    (48, "positiveIntegerValue"),
    (49, "timePatternValue"),
    (50, "timeValue"),
    (51, "notificationForwarder"),
    (52, "alertEnrollment"),
    (53, "channel"),
    (54, "lightingOutput"),
    (55, "binaryLightingOutput"),
    (56, "networkPort"),
    (57, "elevatorGroup"),
    (58, "escalator"),
    (59, "lift"),
    (60, "staging"),
];

/// Property identifiers: (number, name).
pub const PROPERTIES: &[(u32, &str)] = &[
    (0, "ackedTransitions"),
    (1, "ackRequired"),
    (2, "action"),
    (3, "actionText"),
    (4, "activeText"),
    (5, "activeVtSessions"),
    (6, "alarmValue"),
    (7, "alarmValues"),
    (8, "all"),
    (9, "allWritesSuccessful"),
    (10, "apduSegmentTimeout"),
    (11, "apduTimeout"),
    (12, "applicationSoftwareVersion"),
    (13, "archive"),
    (14, "bias"),
    (15, "changeOfStateCount"),
    (16, "changeOfStateTime"),
    (17, "notificationClass"),
    (19, "controlledVariableReference"),
    (20, "controlledVariableUnits"),
    (21, "controlledVariableValue"),
    (22, "covIncrement"),
    (23, "dateList"),
    (24, "daylightSavingsStatus"),
    (25, "deadband"),
    (26, "derivativeConstant"),
    (27, "derivativeConstantUnits"),
    (28, "description"),
    (29, "descriptionOfHalt"),
    (30, "deviceAddressBinding"),
    (31, "deviceType"),
    (32, "effectivePeriod"),
    (33, "elapsedActiveTime"),
    (34, "errorLimit"),
    (35, "eventEnable"),
    (36, "eventState"),
    (37, "eventType"),
    (38, "exceptionSchedule"),
    (39, "faultValues"),
    (40, "feedbackValue"),
    (41, "fileAccessMethod"),
    (42, "fileSize"),
    (43, "fileType"),
    (44, "firmwareRevision"),
    (45, "highLimit"),
    (46, "inactiveText"),
    (47, "inProcess"),
    (48, "instanceOf"),
    (49, "integralConstant"),
    (50, "integralConstantUnits"),
    (52, "limitEnable"),
    (53, "listOfGroupMembers"),
    (54, "listOfObjectPropertyReferences"),
    (56, "localDate"),
    (57, "localTime"),
    (58, "location"),
    (59, "lowLimit"),
    (60, "manipulatedVariableReference"),
    (61, "maximumOutput"),
    (62, "maxApduLengthAccepted"),
    (63, "maxInfoFrames"),
    (64, "maxMaster"),
    (65, "maxPresValue"),
    (66, "minimumOffTime"),
    (67, "minimumOnTime"),
    (68, "minimumOutput"),
    (69, "minPresValue"),
    (70, "modelName"),
    (71, "modificationDate"),
    (72, "notifyType"),
    (73, "numberOfApduRetries"),
    (74, "numberOfStates"),
    (75, "objectIdentifier"),
    (76, "objectList"),
    (77, "objectName"),
    (78, "objectPropertyReference"),
    (79, "objectType"),
    (80, "optional"),
    (81, "outOfService"),
    (82, "outputUnits"),
    (83, "eventParameters"),
    (84, "polarity"),
    (85, "presentValue"),
    (86, "priority"),
    (87, "priorityArray"),
    (88, "priorityForWriting"),
    (89, "processIdentifier"),
    (90, "programChange"),
    (91, "programLocation"),
    (92, "programState"),
    (93, "proportionalConstant"),
    (94, "proportionalConstantUnits"),
    (96, "protocolObjectTypesSupported"),
    (97, "protocolServicesSupported"),
    (98, "protocolVersion"),
    (99, "readOnly"),
    (100, "reasonForHalt"),
    (102, "recipientList"),
    (103, "reliability"),
    (104, "relinquishDefault"),
    (105, "required"),
    (106, "resolution"),
    (107, "segmentationSupported"),
    (108, "setpoint"),
    (109, "setpointReference"),
    (110, "stateText"),
    (111, "statusFlags"),
    (112, "systemStatus"),
    (113, "timeDelay"),
    (114, "timeOfActiveTimeReset"),
    (115, "timeOfStateCountReset"),
    (116, "timeSynchronizationRecipients"),
    (117, "units"),
    (118, "updateInterval"),
    (119, "utcOffset"),
    (120, "vendorIdentifier"),
    (121, "vendorName"),
    (122, "vtClassesSupported"),
    (123, "weeklySchedule"),
    (130, "eventTimeStamps"),
    (139, "protocolRevision"),
    (152, "activeCovSubscriptions"),
    (155, "databaseRevision"),
    (167, "maxSegmentsAccepted"),
    (168, "profileName"),
    (173, "logDeviceObjectProperty"),
    (179, "structuredObjectList"),
    (196, "lastRestartReason"),
    (203, "restartNotificationRecipients"),
    (211, "timeOfDeviceRestart"),
    (212, "timeSynchronizationInterval"),
];

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(|c| c.to_lowercase())
        .collect()
}

/// The number of an object type name (or a decimal number).
pub fn object_type(name: &str) -> Option<u16> {
    let n = norm(name.trim());
    if let Ok(v) = n.parse::<u16>() {
        return (v < 1024).then_some(v);
    }
    OBJECT_TYPES
        .iter()
        .find(|(_, s)| norm(s) == n)
        .map(|(v, _)| *v)
}

/// The name of an object type (its number for one not listed).
pub fn object_type_name(v: u16) -> String {
    OBJECT_TYPES
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| v.to_string())
}

/// Proprietary properties known by name: those of upstream's one bundled proprietary module
/// (Siemens Desigo CC, vendor 7: `descriptionList` of the device, analog input, analog value
/// and pulse converter objects), which upstream loads with `loadProprietaryDevices`. tbgw
/// always knows them; any other proprietary property is read by its number.
pub const PROPRIETARY_PROPERTIES: &[(u32, &str)] = &[(3121, "descriptionList")];

/// The number of a property name (or a decimal number).
pub fn property(name: &str) -> Option<u32> {
    let n = norm(name.trim());
    if let Ok(v) = n.parse::<u32>() {
        return (v < 4_194_304).then_some(v);
    }
    PROPERTIES
        .iter()
        .chain(PROPRIETARY_PROPERTIES)
        .find(|(_, s)| norm(s) == n)
        .map(|(v, _)| *v)
}

/// The camelCase name of a property (its number for one not listed).
pub fn property_name(v: u32) -> String {
    PROPERTIES
        .iter()
        .chain(PROPRIETARY_PROPERTIES)
        .find(|(n, _)| *n == v)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| v.to_string())
}

/// presentValue.
pub const PRESENT_VALUE: u32 = 85;
/// objectName.
pub const OBJECT_NAME: u32 = 77;
/// objectList.
pub const OBJECT_LIST: u32 = 76;
/// statusFlags.
pub const STATUS_FLAGS: u32 = 111;
/// The device object type.
pub const DEVICE: u16 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_both_ways() {
        assert_eq!(property("descriptionList"), Some(3121));
        assert_eq!(property_name(3121), "descriptionList");
        assert_eq!(object_type("analogValue"), Some(2));
        assert_eq!(object_type("analog-value"), Some(2));
        assert_eq!(object_type("ANALOG_VALUE"), Some(2));
        assert_eq!(object_type("130"), Some(130));
        assert_eq!(object_type("nope"), None);
        assert_eq!(object_type_name(5), "binaryValue");
        assert_eq!(property("presentValue"), Some(85));
        assert_eq!(property("present-value"), Some(85));
        assert_eq!(property("512"), Some(512));
        assert_eq!(property_name(77), "objectName");
        assert_eq!(property_name(9999), "9999");
        for (n, s) in OBJECT_TYPES {
            assert_eq!(object_type(s), Some(*n), "{s}");
        }
        for (n, s) in PROPERTIES {
            assert_eq!(property(s), Some(*n), "{s}");
        }
    }
}
